//! Terarchitect Kubernetes operator: AgentJob CRD, queue dispatcher and Job reconciler

//! An in-process fake Kubernetes API server for testing kube-rs clients

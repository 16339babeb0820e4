//! Terarchitect api-server: projects, tickets, settings, the job queue, memory and the worker API

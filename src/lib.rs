//! Serin: a progressive-delivery controller for Kubernetes.

pub mod api;

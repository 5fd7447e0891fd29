//! Serin: a progressive-delivery controller for Kubernetes.

pub mod api;
pub mod decision;
pub mod routing;
pub mod workload;

//! Serin: a progressive-delivery controller for Kubernetes.

pub mod api;
pub mod controller;
pub mod decision;
pub mod loadtester;
pub mod metrics;
pub mod notify;
pub mod routing;
pub mod telemetry;
pub mod vocabulary;
pub mod webhooks;
pub mod workload;

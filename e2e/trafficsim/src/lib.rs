//! The traffic simulator: the local cluster's stand-in for a data plane. kwok's pods serve nothing, so this
//! watches routing objects, Services and Pods, sends each route simulated requests split exactly by its
//! weights (and header matches), lets each pod answer as its annotations declare, and serves the resulting
//! series on /metrics in the shapes Prometheus queries for canary analysis read. It also answers Flagger's
//! load-tester API, turning load commands into simulated requests.

pub mod cluster;
pub mod engine;
pub mod loadtester;
pub mod metrics;
pub mod model;
pub mod rng;
pub mod routes;

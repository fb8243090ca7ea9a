//! Test harness parts shared by the live-agent tests: the stand-in API server, a real
//! Prometheus, and a load exporter for it to scrape.
#![allow(dead_code, clippy::unwrap_used, clippy::collapsible_if)]

pub mod apiserver;
pub mod envoy;
pub mod prom;
pub mod rbac;

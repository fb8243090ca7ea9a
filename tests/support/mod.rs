//! Test harness parts shared by the live-agent tests: the real control plane (test bed), a
//! fault proxy in front of it, a real Prometheus, and load exporters for it to scrape.
#![allow(dead_code, clippy::unwrap_used, clippy::collapsible_if)]

pub mod adapter;
pub mod audit;
pub mod envoy;
pub mod faultproxy;
pub mod live;
pub mod prom;
pub mod testbed;

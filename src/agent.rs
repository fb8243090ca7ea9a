//! The live agent: the kube-runtime controller that runs the engine on every ElasticGateway,
//! and the runtime that wires it (signals, admin server, watches, readiness, leadership).
//!
//! One reconcile reads like its table of contents ([`controller`]): [`observe`] (the target,
//! the load, the pods, or one hold) → [`crate::act::plan`] (the engine's decision and the
//! changes it asks for) → [`apply`] (each write behind the Lease fence) → [`report`] (status,
//! Events and metrics, status a pure function of the three). The agent sits above the adapters
//! ([`crate::k8s`], [`crate::prom`], [`crate::fastpath`]); nothing below imports it.

pub mod apply;
pub mod context;
pub mod controller;
pub mod events;
pub mod hand_back;
pub mod ledger;
pub mod memory;
pub mod observe;
pub mod report;
pub mod runtime;
pub mod wake;

pub use context::{Config, Context};

#[cfg(test)]
mod tests;

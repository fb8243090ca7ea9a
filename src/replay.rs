//! Drills from the real world: a scenario read from a running cluster ([`snapshot`]), a load
//! recorded by Prometheus and replayed through the simulator ([`recorded`]), and a real drill
//! scored from Prometheus history beside the simulator's prediction ([`score`], [`html`]).
//!
//! Everything reads; nothing here writes to the cluster or to Prometheus. Every problem with the
//! data (an empty window, a gap too long to bridge, several series where one is expected, a
//! missing pool) is an [`Error`] naming it, so no partial report is ever written as whole; the
//! problems that can be bridged (short gaps, counter resets) are bridged and listed in the report.

pub mod html;
pub mod marks;
pub mod recorded;
pub mod score;
pub mod snapshot;

use crate::clock::rfc3339;

/// Why a snapshot, a replay or a score could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// Prometheus could not be asked or refused the query; the text names the problem.
    #[error("{0}")]
    Prometheus(String),
    /// No data at all for the query in the window.
    #[error(
        "empty window: `{query}` returned no data between {start} and {end} (is the query right? does Prometheus keep data that old?)"
    )]
    EmptyWindow {
        query: String,
        start: String,
        end: String,
    },
    /// Data in the window, none of it usable: each kind of garbage counted.
    #[error(
        "no usable sample: `{query}` returned {samples} sample(s) between {start} and {end}, none of them a rate to replay: {why}"
    )]
    NoUsableSample {
        query: String,
        start: String,
        end: String,
        samples: usize,
        why: String,
    },
    /// Several series where one total is expected.
    #[error(
        "`{query}` returned {count} series where one is expected ({labels}); wrap it in sum(), or pass --sum to add them up"
    )]
    SeveralSeries {
        query: String,
        count: usize,
        labels: String,
    },
    /// A hole in the data longer than may be bridged.
    #[error(
        "gap in the data: `{query}` has no value from {from} to {to} ({seconds:.0} s), longer than --max-gap ({max:.0} s); choose another window or raise --max-gap"
    )]
    Gap {
        query: String,
        from: String,
        to: String,
        seconds: f64,
        max: f64,
    },
    /// The window itself is wrong (end before start, too long, bad step).
    #[error("invalid window: {0}")]
    Window(String),
    /// The cluster does not hold what a snapshot needs.
    #[error("cluster snapshot: {0}")]
    Cluster(String),
    /// The Kubernetes API failed while reading.
    #[error("cluster snapshot: reading {what}: {error}")]
    Kube { what: String, error: String },
}

/// A query window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    pub start: f64,
    pub end: f64,
    pub step: f64,
}

/// Longest window replayed or scored: the drill's own limit.
pub const MAX_WINDOW_SECONDS: f64 = 30.0 * 86_400.0;

impl Window {
    pub fn new(start: f64, end: f64, step: f64) -> Result<Self, Error> {
        if !(step.is_finite() && (1.0..=3600.0).contains(&step)) {
            return Err(Error::Window(format!(
                "--step must be within 1 s and 1 h, got {step} s"
            )));
        }
        if end <= start {
            return Err(Error::Window(format!(
                "--end ({}) is not after --start ({})",
                rfc3339(end),
                rfc3339(start)
            )));
        }
        if end - start > MAX_WINDOW_SECONDS {
            return Err(Error::Window(format!(
                "{:.1} days is longer than the drill's 30 days",
                (end - start) / 86_400.0
            )));
        }
        if end - start < 2.0 * step {
            return Err(Error::Window(format!(
                "{:.0} s holds fewer than two steps of {step} s",
                end - start
            )));
        }
        Ok(Self { start, end, step })
    }

    /// Number of steps from start to end, both included.
    pub fn slots(&self) -> usize {
        ((self.end - self.start) / self.step).floor() as usize + 1
    }

    pub fn describe(&self) -> String {
        format!(
            "{} .. {} (step {} s)",
            rfc3339(self.start),
            rfc3339(self.end),
            self.step
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_checked() {
        assert!(Window::new(100.0, 50.0, 15.0).is_err());
        assert!(Window::new(0.0, 40.0 * 86_400.0, 15.0).is_err());
        assert!(Window::new(0.0, 3600.0, 0.0).is_err());
        assert!(Window::new(0.0, 20.0, 15.0).is_err());
        let w = Window::new(0.0, 86_400.0, 15.0).unwrap();
        assert_eq!(w.slots(), 5761);
    }
}

//! What the agent remembers per gateway between reconciles: the engine's memory, the failure
//! count for the error policy's backoff, the validated generation, the last status conditions
//! written, `status.original` until the cache shows it, and the fast path's failing flag. One
//! lock, taken only here and never across an await.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use tracing::info;

use super::observe::ContestSeen;
use crate::engine::EngineState;
use crate::model::GatewayKey;
use crate::policy::OriginalPlacement;

/// Per gateway.
#[derive(Default)]
struct GatewayMemory {
    engine: EngineState,
    failures: u32,
    /// This replica led at the last decision: its engine memory describes what it applied.
    led: bool,
    /// The validation result of the spec at this generation (validation parses PromQL).
    validated: Option<(i64, Vec<String>)>,
    /// The conditions of the last status write, fresher than the cache right after it; `None`
    /// until this replica writes as the leader (then the object's status is the truth).
    written: Option<Vec<Condition>>,
    /// `status.original` as this replica recorded it, until the cache shows it.
    original: Option<OriginalPlacement>,
    /// The fast path's last read got nothing from any pod (logged once, when it starts).
    fast_path_failing: bool,
    fast_path_implausible: bool,
    /// When the last reconcile ended, and when the next was due after it.
    reconciled: Option<(Instant, Duration)>,
    /// The replica count this replica last wrote to the target.
    wrote_count: Option<i32>,
    /// Another writer of the count, as last seen.
    contest: Option<ContestSeen>,
    /// When the pods' CPU was last read (for the ECI pods' share).
    cpu_read_at: Option<f64>,
    /// The last CPU read had no ECI pod of the gateway.
    eci_cpu_missing: bool,
    /// The uid of the object this gateway was handed back for: a reconcile of the same deleted
    /// object from a cache that has not yet seen the finalizer go must not hand it back again.
    /// Whether it was deleted paused (left as it was): unpaused while still terminating (the
    /// finalizer's removal failed), it is handed back for real.
    handed_back: Option<(String, bool)>,
}

/// Every gateway's memory.
#[derive(Default)]
pub struct Memories(Mutex<HashMap<GatewayKey, GatewayMemory>>);

impl Memories {
    fn lock(&self) -> MutexGuard<'_, HashMap<GatewayKey, GatewayMemory>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn with<T>(&self, key: &GatewayKey, f: impl FnOnce(&mut GatewayMemory) -> T) -> T {
        f(self.lock().entry(key.clone()).or_default())
    }

    /// The engine's memory to decide from. A replica that starts leading starts it afresh, as a
    /// restarted one does: the HPA seed then holds the count for a full scale-down window of
    /// fresh data. What it learnt of the pools' start latencies stays: a standby saw the same
    /// pods start, and the figures only say how far ahead planned capacity goes up.
    pub fn engine_for(&self, key: &GatewayKey, leader: bool) -> EngineState {
        self.with(key, |m| {
            if leader && !m.led {
                info!(
                    "leading: engine memory starts afresh (no scale-down for one stabilization window)"
                );
                let starts = std::mem::take(&mut m.engine.starts);
                m.engine = EngineState {
                    starts,
                    ..EngineState::default()
                };
            }
            m.led = leader;
            m.engine.clone()
        })
    }

    /// The engine's memory after a decision ([`crate::act::commit`]); the failures end.
    pub fn decided(&self, key: &GatewayKey, next: EngineState) {
        self.with(key, |m| {
            m.engine = next;
            m.failures = 0;
        });
    }

    /// Counts a failed reconcile; returns how many failed in a row.
    pub fn failed(&self, key: &GatewayKey) -> u32 {
        self.with(key, |m| {
            m.failures += 1;
            m.failures
        })
    }

    /// The validation errors recorded for this generation, if any were.
    pub fn validated(&self, key: &GatewayKey, generation: i64) -> Option<Vec<String>> {
        self.with(key, |m| {
            m.validated
                .as_ref()
                .filter(|(g, _)| *g == generation)
                .map(|(_, e)| e.clone())
        })
    }

    pub fn set_validated(&self, key: &GatewayKey, generation: i64, errors: Vec<String>) {
        self.with(key, |m| m.validated = Some((generation, errors)));
    }

    /// A follower forgets the conditions it last wrote: once another replica leads, the
    /// object's status is the truth.
    pub fn following(&self, key: &GatewayKey) {
        self.with(key, |m| m.written = None);
    }

    /// The conditions this replica wrote last, while it has led without a break.
    pub fn written(&self, key: &GatewayKey) -> Option<Vec<Condition>> {
        self.with(key, |m| m.written.clone())
    }

    pub fn set_written(&self, key: &GatewayKey, conditions: Vec<Condition>) {
        self.with(key, |m| m.written = Some(conditions));
    }

    /// `status.original` as this replica recorded it.
    pub fn original(&self, key: &GatewayKey) -> Option<OriginalPlacement> {
        self.with(key, |m| m.original.clone())
    }

    pub fn set_original(&self, key: &GatewayKey, original: OriginalPlacement) {
        self.with(key, |m| m.original = Some(original));
    }

    /// This replica wrote `count` as the target's replica count.
    pub fn count_written(&self, key: &GatewayKey, count: i32) {
        self.with(key, |m| m.wrote_count = Some(count));
    }

    pub fn wrote_count(&self, key: &GatewayKey) -> Option<i32> {
        self.with(key, |m| m.wrote_count)
    }

    pub fn contest(&self, key: &GatewayKey) -> Option<ContestSeen> {
        self.with(key, |m| m.contest)
    }

    pub fn set_contest(&self, key: &GatewayKey, seen: Option<ContestSeen>) {
        self.with(key, |m| m.contest = seen);
    }

    /// A reconcile ended (a decision or a hold); the next is due in `next`.
    pub fn reconciled(&self, key: &GatewayKey, next: Duration) {
        self.with(key, |m| m.reconciled = Some((Instant::now(), next)));
    }

    /// Whether this reconcile comes late: more than twice the interval (and a second) after the
    /// last one ended. The agent is then short of slots, or its calls are slow.
    pub fn behind(&self, key: &GatewayKey) -> bool {
        self.with(key, |m| {
            m.reconciled
                .is_some_and(|(at, next)| at.elapsed() > next * 2 + Duration::from_secs(1))
        })
    }

    /// Whether the pods' CPU is due to be read at `now` (Unix seconds): at most once every
    /// `every`; noted as read when it is.
    pub fn cpu_read_due(&self, key: &GatewayKey, now: f64, every: f64) -> bool {
        self.with(key, |m| {
            let due = m.cpu_read_at.is_none_or(|at| now - at >= every || now < at);
            if due {
                m.cpu_read_at = Some(now);
            }
            due
        })
    }

    /// Records whether Prometheus had CPU for no ECI pod of the gateway while they served;
    /// returns the previous value (the log says so once, when it starts).
    pub fn eci_cpu_missing(&self, key: &GatewayKey, missing: bool) -> bool {
        self.with(key, |m| std::mem::replace(&mut m.eci_cpu_missing, missing))
    }

    /// Records whether the fast path's read failed for every pod; returns the previous value.
    pub fn fast_path_failing(&self, key: &GatewayKey, failing: bool) -> bool {
        self.with(key, |m| {
            std::mem::replace(&mut m.fast_path_failing, failing)
        })
    }

    /// Records whether a pod's fast-path rate was out of bounds in this read; returns the
    /// previous value (the log warns once per episode, the metric counts every one).
    pub fn fast_path_implausible(&self, key: &GatewayKey, implausible: bool) -> bool {
        self.with(key, |m| {
            std::mem::replace(&mut m.fast_path_implausible, implausible)
        })
    }

    /// Forgets the gateways not in `live`; returns them.
    pub fn forget_missing(&self, live: &HashSet<GatewayKey>) -> Vec<GatewayKey> {
        let mut all = self.lock();
        let gone: Vec<GatewayKey> = all.keys().filter(|k| !live.contains(*k)).cloned().collect();
        for k in &gone {
            all.remove(k);
        }
        gone
    }

    /// The gateway was handed back for the object `uid` (left as it was, when `paused`):
    /// everything else is forgotten, and the mark goes with the key once the object leaves the
    /// cache ([`Self::forget_missing`]).
    pub fn handed_back(&self, key: &GatewayKey, uid: Option<String>, paused: bool) {
        self.lock().insert(
            key.clone(),
            GatewayMemory {
                handed_back: uid.map(|u| (u, paused)),
                ..GatewayMemory::default()
            },
        );
    }

    /// Whether the object `uid` needs no hand-back now: it had one, and a paused one's still
    /// stands only while the object is still paused.
    pub fn was_handed_back(&self, key: &GatewayKey, uid: Option<&str>, paused: bool) -> bool {
        let Some(uid) = uid else { return false };
        self.lock().get(key).is_some_and(|m| {
            m.handed_back
                .as_ref()
                .is_some_and(|(u, was_paused)| u == uid && (!was_paused || paused))
        })
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Changes every gateway's engine memory (tests age it).
    #[cfg(test)]
    pub fn edit_engines(&self, mut f: impl FnMut(&mut EngineState)) {
        for m in self.lock().values_mut() {
            f(&mut m.engine);
        }
    }
}

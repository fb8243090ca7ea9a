//! Leader election on a Lease, and the fence every write passes.
//!
//! The elector is client-go's (`tools/leaderelection`, `tryAcquireOrRenew`): read the Lease;
//! take it when it is free or when its record has not changed for `leaseDurationSeconds` as
//! timed on this replica's own clock; write it back with the `resourceVersion` just read (a
//! merge patch that carries `metadata.resourceVersion` is a precondition: RBAC needs only
//! `patch`), so that of two replicas acting on the same read only one succeeds (409 for the
//! other). The leader renews every `retry` period.
//!
//! **The fence.** Checking leadership once per reconcile is not enough: between that check and a
//! write come Prometheus queries and API calls, and the process may stall (a long pause, a hung
//! call, a partition) for longer than the Lease lasts while another replica takes over. So the
//! elector publishes not "leading" but *until when*: the local monotonic [`Instant`] at which it
//! sent the last renewal that succeeded, plus the Lease's duration. A write goes out only while
//! at least its own timeout is left before that instant ([`Leadership::permit`]); each write is
//! bounded by that timeout, so it is answered or abandoned before another replica may lead.
//!
//! Why a local instant, not `renewTime + leaseDurationSeconds` from the Lease: `renewTime` is
//! another machine's wall clock, and a skew of a few seconds between two nodes would shift the
//! deadline by as much. A standby here never compares `renewTime` with its clock either: it
//! times the record from the moment *it* first saw it. It saw our renewal no earlier than we sent
//! it, so it cannot take the Lease before our `sent + duration`; and if it acts on an older
//! record, its write carries an older `resourceVersion` and is refused. Only the clocks' rates
//! must agree (they do, to parts per million), not their readings. The instant is monotonic, so
//! a wall-clock step (NTP) changes nothing either.
//!
//! On shutdown the Lease is released (holder cleared), and a standby, which reads the Lease every
//! `retry` period, takes it at its next read: a clean hand-over takes one retry period, not one
//! Lease duration.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::bounded;

/// Where and as whom to elect.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    /// How long the Lease holds without renewal.
    pub duration: Duration,
    /// How often the leader renews and a standby reads the Lease.
    pub retry: Duration,
    /// The bound of each call to the API server.
    pub call_timeout: Duration,
}

/// What this replica may do, as its elector last knew it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tenure {
    /// Another replica holds the Lease, or nobody does yet.
    Following,
    /// This replica holds the Lease until `until` (a local monotonic instant: the last renewal
    /// that succeeded, as sent, plus the Lease's duration), or for good when `None` (leader
    /// election turned off).
    Leading { until: Option<Instant> },
}

/// Why a write was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Fenced {
    #[error("this replica does not hold the leader Lease")]
    NotLeader,
    #[error("this replica's hold on the Lease ran out {0:?} ago without a renewal")]
    Expired(Duration),
    #[error("only {left:?} left on the Lease, less than the {needs:?} the write may take")]
    Expiring { left: Duration, needs: Duration },
}

impl Fenced {
    /// A short, stable label for `spillway_fenced_writes_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            Fenced::NotLeader => "not_leader",
            Fenced::Expired(_) => "expired",
            Fenced::Expiring { .. } => "expiring",
        }
    }
}

/// This replica's leadership, as the controller reads it.
#[derive(Clone, Debug)]
pub struct Leadership(watch::Receiver<Tenure>);

impl Leadership {
    pub fn new(rx: watch::Receiver<Tenure>) -> Self {
        Self(rx)
    }

    /// A fixed tenure: leading for good, or following for good (tests, one replica).
    pub fn fixed(leading: bool) -> Self {
        let tenure = if leading {
            Tenure::Leading { until: None }
        } else {
            Tenure::Following
        };
        // A receiver keeps the last value after its sender is gone.
        Self(watch::channel(tenure).1)
    }

    pub fn tenure(&self) -> Tenure {
        *self.0.borrow()
    }

    /// Leading, and the hold has not run out.
    pub fn is_leader(&self) -> bool {
        self.permit(Duration::ZERO).is_ok()
    }

    /// Whether a write that may take up to `needs` may be sent now: only while this replica
    /// holds the Lease for at least that long still.
    pub fn permit(&self, needs: Duration) -> Result<(), Fenced> {
        match self.tenure() {
            Tenure::Following => Err(Fenced::NotLeader),
            Tenure::Leading { until: None } => Ok(()),
            Tenure::Leading { until: Some(until) } => {
                let now = Instant::now();
                match until.checked_duration_since(now) {
                    None => Err(Fenced::Expired(now - until)),
                    Some(left) if left < needs || left.is_zero() => {
                        Err(Fenced::Expiring { left, needs })
                    }
                    Some(_) => Ok(()),
                }
            }
        }
    }

    /// The channel, to follow changes.
    pub fn receiver(&self) -> watch::Receiver<Tenure> {
        self.0.clone()
    }
}

/// The outcome of one round.
enum Round {
    /// This replica holds the Lease until then.
    Holds(Instant),
    /// Another replica does.
    HeldBy(String),
}

struct Elector {
    leases: Api<Lease>,
    s: LeaseSettings,
    /// The record last read (its `resourceVersion`) and the local instant it was first seen: a
    /// holder that stops renewing is presumed gone `leaseDurationSeconds` after that instant
    /// (client-go's `observedTime`), whatever the clocks say.
    observed: Option<(String, Instant)>,
}

impl Elector {
    fn params(&self) -> PostParams {
        PostParams {
            field_manager: Some("spillway".into()),
            ..Default::default()
        }
    }

    /// A merge patch of the Lease's spec, refused (409) unless the Lease is still at `version`.
    async fn write(&self, version: &str, spec: serde_json::Value) -> Result<Lease, kube::Error> {
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": version},
            "spec": spec,
        });
        let pp = PatchParams {
            field_manager: Some("spillway".into()),
            ..Default::default()
        };
        bounded(
            self.s.call_timeout,
            self.leases.patch(&self.s.name, &pp, &Patch::Merge(&patch)),
        )
        .await
    }

    fn seconds(&self) -> i32 {
        i32::try_from(self.s.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    /// Reads the Lease, and takes or renews it when it is this replica's to take.
    async fn round(&mut self) -> Result<Round, kube::Error> {
        let t = self.s.call_timeout;
        let Some(lease) = bounded(t, self.leases.get_opt(&self.s.name)).await? else {
            let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
            let fresh = Lease {
                metadata: ObjectMeta {
                    name: Some(self.s.name.clone()),
                    namespace: Some(self.s.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.s.identity.clone()),
                    lease_duration_seconds: Some(self.seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            let sent = Instant::now();
            // Two replicas creating at once: one gets 409 and reads again next round.
            let made = bounded(t, self.leases.create(&self.params(), &fresh)).await?;
            self.observed = made.metadata.resource_version.map(|v| (v, sent));
            return Ok(Round::Holds(sent + self.s.duration));
        };
        let now = Instant::now();
        let version_read = lease.metadata.resource_version.clone().unwrap_or_default();
        if self
            .observed
            .as_ref()
            .is_none_or(|(v, _)| *v != version_read)
        {
            self.observed = Some((version_read.clone(), now));
        }
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let ours = holder.as_deref() == Some(self.s.identity.as_str());
        if let Some(theirs) = holder.as_ref().filter(|_| !ours) {
            let lasts = spec.lease_duration_seconds.map_or(self.s.duration, |d| {
                Duration::from_secs(u64::try_from(d.max(1)).unwrap_or(1))
            });
            let seen = self.observed.as_ref().map_or(now, |o| o.1);
            if now < seen + lasts {
                return Ok(Round::HeldBy(theirs.clone()));
            }
            info!(holder = %theirs, ?lasts, "the Lease was not renewed within its duration; taking it over");
        }
        let now_ts = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let mut next = serde_json::json!({
            "holderIdentity": self.s.identity,
            "leaseDurationSeconds": self.seconds(),
            "renewTime": now_ts,
        });
        if !ours {
            next["acquireTime"] = serde_json::json!(now_ts);
            next["leaseTransitions"] = serde_json::json!(spec.lease_transitions.unwrap_or(0) + 1);
        }
        let sent = Instant::now();
        // With the resourceVersion just read: if anyone wrote the Lease since, the apiserver
        // refuses this write (409) and the next round reads again.
        let written = self.write(&version_read, next).await?;
        self.observed = written.metadata.resource_version.map(|v| (v, sent));
        Ok(Round::Holds(sent + self.s.duration))
    }

    /// Clears the holder when it is this replica, so that a standby takes the Lease at once.
    async fn release(&self) -> Result<(), kube::Error> {
        let t = self.s.call_timeout;
        let Some(lease) = bounded(t, self.leases.get_opt(&self.s.name)).await? else {
            return Ok(());
        };
        let holder = lease.spec.and_then(|s| s.holder_identity);
        if holder.as_deref() != Some(self.s.identity.as_str()) {
            return Ok(());
        }
        let version = lease.metadata.resource_version.unwrap_or_default();
        let cleared =
            serde_json::json!({"holderIdentity": null, "acquireTime": null, "renewTime": null});
        self.write(&version, cleared).await?;
        Ok(())
    }
}

/// Starts electing. The receiver says whether, and until when, this replica leads. When
/// `release` resolves, the tenure turns [`Tenure::Following`] and the Lease is released; then the
/// task ends. Fails when the Lease cannot be read (the API server unreachable, RBAC missing).
pub async fn elect(
    client: Client,
    settings: LeaseSettings,
    release: impl Future<Output = ()> + Send + 'static,
) -> Result<(Leadership, JoinHandle<Result<(), kube::Error>>), kube::Error> {
    let leases = Api::<Lease>::namespaced(client, &settings.namespace);
    bounded(settings.call_timeout, leases.get_opt(&settings.name)).await?;
    let (tx, rx) = watch::channel(Tenure::Following);
    let mut elector = Elector {
        leases,
        s: settings,
        observed: None,
    };
    let task = tokio::spawn(async move {
        tokio::pin!(release);
        let id = elector.s.identity.clone();
        loop {
            let round = tokio::select! {
                biased;
                () = &mut release => break,
                r = elector.round() => r,
            };
            let was = *tx.borrow();
            let now = Instant::now();
            let next = match (round, was) {
                (Ok(Round::Holds(until)), _) => Tenure::Leading { until: Some(until) },
                (Ok(Round::HeldBy(holder)), Tenure::Leading { .. }) => {
                    warn!(identity = %id, %holder, "lost the leader Lease to another replica; no more writes from this one");
                    Tenure::Following
                }
                (Ok(Round::HeldBy(holder)), Tenure::Following) => {
                    debug!(%holder, "the Lease is held by another replica");
                    Tenure::Following
                }
                (Err(e), Tenure::Leading { until: Some(until) }) if now >= until => {
                    warn!(identity = %id, error = %e, "the leader Lease ran out without a renewal (this replica stalled or cannot reach the API server); no more writes from this one");
                    Tenure::Following
                }
                (Err(e), Tenure::Leading { until: Some(until) }) => {
                    warn!(error = %e, left = ?until - now, "renewing the leader Lease failed; retrying");
                    was
                }
                (Err(e), _) => {
                    debug!(error = %e, "cannot read or take the Lease; retrying");
                    was
                }
            };
            let leads = |t: Tenure| matches!(t, Tenure::Leading { .. });
            if leads(next) != leads(was) {
                tx.send_replace(next);
                if matches!(was, Tenure::Following) {
                    info!(leading = true, identity = %id, "leadership changed");
                } else if matches!(next, Tenure::Following) {
                    info!(leading = false, identity = %id, "leadership changed");
                }
            } else if let Tenure::Leading { .. } = next {
                // A renewal: the same tenure, a later deadline (no log, no change to report).
                tx.send_if_modified(|t| {
                    *t = next;
                    false
                });
            }
            // Round again after a retry period; while leading, also the moment the hold runs
            // out, so that the tenure turns Following then even if the API server is silent.
            let wait = match *tx.borrow() {
                Tenure::Leading { until: Some(u) } => elector
                    .s
                    .retry
                    .min(u.saturating_duration_since(Instant::now())),
                _ => elector.s.retry,
            };
            tokio::select! {
                biased;
                () = &mut release => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
        // Stop acting first, then hand the Lease over.
        tx.send_replace(Tenure::Following);
        let released = elector.release().await;
        match &released {
            Ok(()) => info!(identity = %id, "released the leader Lease"),
            Err(e) => {
                warn!(error = %e, "could not release the leader Lease; it expires on its own")
            }
        }
        released
    });
    Ok((Leadership::new(rx), task))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leading_for(d: Duration) -> Leadership {
        let until = Instant::now() + d;
        Leadership(watch::channel(Tenure::Leading { until: Some(until) }).1)
    }

    #[test]
    fn a_write_needs_its_timeout_left_on_the_lease() {
        let l = leading_for(Duration::from_secs(10));
        assert!(l.permit(Duration::from_secs(2)).is_ok());
        assert!(l.is_leader());
        let e = l.permit(Duration::from_secs(11)).unwrap_err();
        assert_eq!(e.reason(), "expiring");
    }

    #[test]
    fn a_hold_that_ran_out_fences_every_write_even_before_the_elector_notices() {
        // The tenure still says Leading (the elector has not run since), but its instant passed.
        let until = Instant::now().checked_sub(Duration::from_millis(5));
        let l = Leadership(watch::channel(Tenure::Leading { until }).1);
        assert!(!l.is_leader());
        assert!(matches!(l.permit(Duration::ZERO), Err(Fenced::Expired(_))));
    }

    #[test]
    fn followers_never_write_and_without_election_the_replica_always_may() {
        assert_eq!(
            Leadership::fixed(false).permit(Duration::ZERO),
            Err(Fenced::NotLeader)
        );
        assert!(
            Leadership::fixed(true)
                .permit(Duration::from_secs(3600))
                .is_ok()
        );
    }
}

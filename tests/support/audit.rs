//! The apiserver's own record of who wrote what (the test bed's audit log), read for the one
//! invariant leader election exists for: every write to the gateway comes from the replica that
//! holds the Lease at the moment the apiserver receives it.
//!
//! Each replica names itself in its User-Agent (`spillway/<version> (<identity>)`). Every
//! successful write of spillway's elector to the Lease makes its author the holder (a renewal or
//! a takeover; a release is its holder's last word), so the holder at any moment is the author of
//! the last successful Lease write the apiserver received before it.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

/// One successful write by a spillway replica, as the apiserver recorded it.
#[derive(Clone, Debug)]
pub struct Write {
    pub who: String,
    /// `requestReceivedTimestamp`: when the apiserver received the request.
    pub at: Timestamp,
    pub verb: String,
    /// `resource[/subresource]/name`.
    pub what: String,
    pub code: u16,
}

impl Write {
    pub fn is_lease(&self, lease: &str) -> bool {
        self.what == format!("leases/{lease}")
    }

    /// A write to what spillway steers: the gateway Deployment (and its scale), its pods
    /// (deletion costs, evictions), the ElasticGateway (status, finalizer). Events are a record
    /// of what a replica did, and the Lease is the election itself.
    pub fn is_gateway(&self) -> bool {
        ["deployments", "pods", "elasticgateways"]
            .iter()
            .any(|r| self.what.starts_with(&format!("{r}/")))
    }
}

/// The replica named in a spillway User-Agent.
fn replica(user_agent: &str) -> Option<String> {
    let rest = user_agent.strip_prefix("spillway/")?;
    let (_, who) = rest.split_once(" (")?;
    Some(who.strip_suffix(')')?.to_string())
}

/// Every successful write by a spillway replica, in the order the apiserver received them.
pub fn spillway_writes(audit: &[Value]) -> Vec<Write> {
    let mut out: Vec<Write> = audit
        .iter()
        .filter(|e| e["stage"] == "ResponseComplete")
        .filter(|e| {
            matches!(
                e["verb"].as_str(),
                Some("create" | "update" | "patch" | "delete")
            )
        })
        .filter_map(|e| {
            let who = replica(e["userAgent"].as_str()?)?;
            let code = u16::try_from(e["responseStatus"]["code"].as_u64()?).ok()?;
            let o = &e["objectRef"];
            let mut what = o["resource"].as_str()?.to_string();
            if let Some(sub) = o["subresource"].as_str() {
                what = format!("{what}/{sub}");
            }
            what = format!("{what}/{}", o["name"].as_str().unwrap_or(""));
            Some(Write {
                who,
                at: e["requestReceivedTimestamp"].as_str()?.parse().ok()?,
                verb: e["verb"].as_str()?.to_string(),
                what,
                code,
            })
        })
        .filter(|w| (200..300).contains(&w.code))
        .collect();
    out.sort_by_key(|w| w.at);
    out
}

/// What the log says about the Lease named `lease` and the gateway writes.
#[derive(Debug, Default)]
pub struct Tenures {
    /// Gateway writes the apiserver received from a replica other than the holder of the moment.
    pub stale: Vec<String>,
    /// Gateway writes in all.
    pub gateway_writes: usize,
    /// Changes of holder: (new holder, when its first Lease write was received).
    pub takeovers: Vec<(String, Timestamp)>,
    /// Per change of holder, the time from the old holder's last gateway write to the new
    /// holder's taking the Lease (the smallest is the closest call).
    pub margins: Vec<f64>,
}

/// Reads the audit log for the Lease `lease`.
pub fn tenures(audit: &[Value], lease: &str) -> Tenures {
    let mut t = Tenures::default();
    let mut holder: Option<String> = None;
    let mut last_write: Option<(String, Timestamp)> = None;
    for w in spillway_writes(audit) {
        if w.is_lease(lease) {
            if holder.as_deref() != Some(w.who.as_str()) {
                if let Some((old, at)) = &last_write {
                    if *old != w.who {
                        t.margins.push(w.at.duration_since(*at).as_secs_f64());
                    }
                }
                t.takeovers.push((w.who.clone(), w.at));
                holder = Some(w.who.clone());
            }
        } else if w.is_gateway() {
            t.gateway_writes += 1;
            if holder.as_deref() != Some(w.who.as_str()) {
                t.stale.push(format!(
                    "{} {} {} by {} while {} held the Lease",
                    w.at,
                    w.verb,
                    w.what,
                    w.who,
                    holder.as_deref().unwrap_or("nobody")
                ));
            }
            last_write = Some((w.who.clone(), w.at));
        }
    }
    t
}

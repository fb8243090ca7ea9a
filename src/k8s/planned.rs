//! The PlannedEvents the agent knows, by the ElasticGateway each names: a gateway's reconcile
//! reads its own here. An event changes a gateway's decision only through its spec (or its
//! coming and going), so spillway's own status writes wake nobody.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kube::ResourceExt;
use kube::core::DeserializeGuard;
use tracing::warn;

use super::index::Change;
use crate::model::GatewayKey;
use crate::policy::PlannedEvent;

/// A PlannedEvent as watched: one that does not decode is seen (by name) and skipped.
pub type WatchedEvent = DeserializeGuard<PlannedEvent>;

/// The PlannedEvents, by gateway.
#[derive(Debug, Default)]
pub struct PlannedBook {
    by_gateway: HashMap<GatewayKey, BTreeMap<String, Arc<PlannedEvent>>>,
    /// (namespace, event) → the gateway it names.
    named: HashMap<(String, String), GatewayKey>,
    buffer: Option<Vec<Arc<PlannedEvent>>>,
}

impl PlannedBook {
    /// The events naming `key`, by name.
    pub fn of(&self, key: &GatewayKey) -> Vec<Arc<PlannedEvent>> {
        self.by_gateway
            .get(key)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every gateway some event names.
    pub fn gateways(&self) -> impl Iterator<Item = &GatewayKey> {
        self.by_gateway.keys()
    }

    pub fn len(&self) -> usize {
        self.named.len()
    }

    pub fn is_empty(&self) -> bool {
        self.named.is_empty()
    }

    /// An event came or changed: wakes the gateway it names (and the one it named, if it moved)
    /// when its spec changed; a status write wakes nobody.
    pub fn apply(&mut self, ev: WatchedEvent) -> Vec<Change> {
        match decoded(ev) {
            Some(ev) => self.put(ev),
            None => vec![],
        }
    }

    fn put(&mut self, ev: Arc<PlannedEvent>) -> Vec<Change> {
        let at = (ev.namespace().unwrap_or_default(), ev.name_any());
        let key = GatewayKey::new(&at.0, &ev.spec.gateway);
        let before = self.remove(&at);
        let same = before
            .as_ref()
            .is_some_and(|(k, old)| *k == key && old.spec == ev.spec);
        self.insert(at, key.clone(), ev);
        if same {
            return vec![];
        }
        let mut woken = vec![Change::Planned(key.clone())];
        woken.extend(
            before
                .filter(|(k, _)| *k != key)
                .map(|(k, _)| Change::Planned(k)),
        );
        woken
    }

    pub fn delete(&mut self, ev: &WatchedEvent) -> Vec<Change> {
        let at = (ev.namespace().unwrap_or_default(), ev.name_any());
        self.remove(&at)
            .map(|(k, _)| Change::Planned(k))
            .into_iter()
            .collect()
    }

    /// A (re)list starts: events not seen again before [`Self::init_done`] are gone.
    pub fn init(&mut self) {
        self.buffer = Some(Vec::new());
    }

    pub fn init_apply(&mut self, ev: WatchedEvent) {
        let Some(ev) = decoded(ev) else { return };
        match &mut self.buffer {
            Some(buf) => buf.push(ev),
            None => {
                self.put(ev);
            }
        }
    }

    /// The list is complete (the watch reports a change of everything).
    pub fn init_done(&mut self) {
        let listed = self.buffer.take().unwrap_or_default();
        self.by_gateway.clear();
        self.named.clear();
        for ev in listed {
            let at = (ev.namespace().unwrap_or_default(), ev.name_any());
            let key = GatewayKey::new(&at.0, &ev.spec.gateway);
            self.insert(at, key, ev);
        }
    }

    fn insert(&mut self, at: (String, String), key: GatewayKey, ev: Arc<PlannedEvent>) {
        self.by_gateway
            .entry(key.clone())
            .or_default()
            .insert(at.1.clone(), ev);
        self.named.insert(at, key);
    }

    fn remove(&mut self, at: &(String, String)) -> Option<(GatewayKey, Arc<PlannedEvent>)> {
        let key = self.named.remove(at)?;
        let events = self.by_gateway.get_mut(&key)?;
        let old = events.remove(&at.1);
        if events.is_empty() {
            self.by_gateway.remove(&key);
        }
        old.map(|o| (key, o))
    }
}

/// The decoded event, or `None` (said in the log) for one that does not decode: the API
/// server's schema makes that rare (a CRD newer or older than this build).
fn decoded(ev: WatchedEvent) -> Option<Arc<PlannedEvent>> {
    match ev.0 {
        Ok(ev) => Some(Arc::new(ev)),
        Err(invalid) => {
            warn!(
                namespace = invalid.metadata.namespace.as_deref().unwrap_or_default(),
                name = invalid.metadata.name.as_deref().unwrap_or_default(),
                error = %invalid.error,
                "a PlannedEvent does not decode; skipped (is the CRD the one of this spillway version?)"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PlannedEventSpec;

    fn event(name: &str, gateway: &str, rps: f64) -> WatchedEvent {
        let mut ev = PlannedEvent::new(
            name,
            PlannedEventSpec {
                gateway: gateway.into(),
                requests_per_second: rps,
                metric: None,
                start: "2026-11-11T20:00:00Z".into(),
                end: "2026-11-11T22:00:00Z".into(),
                time_zone: None,
                ramp_seconds: 0,
                recurrence: None,
            },
        );
        ev.metadata.namespace = Some("gw".into());
        DeserializeGuard(Ok(ev))
    }

    fn woken(changes: Vec<Change>) -> Vec<String> {
        changes
            .into_iter()
            .map(|c| match c {
                Change::Planned(k) => k.name,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn events_wake_the_gateways_they_name_on_spec_changes_only() {
        let mut book = PlannedBook::default();
        assert_eq!(woken(book.apply(event("sale", "a", 10.0))), ["a"]);
        let mut with_status = event("sale", "a", 10.0);
        if let Ok(ev) = &mut with_status.0 {
            ev.status = Some(Default::default());
        }
        assert!(book.apply(with_status).is_empty(), "a status write");
        assert_eq!(woken(book.apply(event("sale", "a", 20.0))), ["a"]);
        assert_eq!(woken(book.apply(event("sale", "b", 20.0))), ["b", "a"]);
        assert!(book.of(&GatewayKey::new("gw", "a")).is_empty());
        assert_eq!(book.of(&GatewayKey::new("gw", "b")).len(), 1);
        assert_eq!(woken(book.delete(&event("sale", "b", 0.0))), ["b"]);
        assert!(book.is_empty() && book.gateways().next().is_none());
    }

    #[test]
    fn a_relist_drops_what_is_gone() {
        let mut book = PlannedBook::default();
        book.apply(event("old", "a", 10.0));
        book.init();
        book.init_apply(event("new", "a", 10.0));
        assert_eq!(book.of(&GatewayKey::new("gw", "a"))[0].name_any(), "old");
        book.init_done();
        let names: Vec<String> = book
            .of(&GatewayKey::new("gw", "a"))
            .iter()
            .map(|e| e.name_any())
            .collect();
        assert_eq!(names, ["new"]);
        assert_eq!(book.len(), 1);
    }
}

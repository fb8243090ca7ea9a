//! Marking a drill: an annotation `drill.spillway.io/NAME: "START/END"` (RFC 3339; END empty
//! while the drill runs) on the ElasticGateway. The agent exports every mark as
//! `spillway_drill_active` (1 inside the window), `spillway_drill_start_timestamp_seconds` and
//! `spillway_drill_end_timestamp_seconds`; the shipped dashboard shows the first as an
//! annotation, and `spillway drill score --name` finds the window from the other two.

use std::collections::BTreeMap;

use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::{Error, rfc3339};
use crate::policy::ElasticGateway;

/// Prefix of a mark's annotation key.
pub const PREFIX: &str = "drill.spillway.io/";

/// One marked drill.
#[derive(Clone, Debug, PartialEq)]
pub struct Mark {
    pub name: String,
    pub start: f64,
    /// `None` while the drill is still running.
    pub end: Option<f64>,
}

impl Mark {
    /// Inside the window at `now` (an open window has no end).
    pub fn active(&self, now: f64) -> bool {
        now >= self.start && self.end.is_none_or(|e| now <= e)
    }

    pub fn value(&self) -> String {
        format!(
            "{}/{}",
            rfc3339(self.start),
            self.end.map(rfc3339).unwrap_or_default()
        )
    }
}

/// A name usable as an annotation key's name part and a label value.
pub fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::Window(format!(
            "drill name {name:?}: use 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        )))
    }
}

/// The marks among an object's annotations; malformed ones are left out.
pub fn parse(annotations: Option<&BTreeMap<String, String>>) -> Vec<Mark> {
    let Some(a) = annotations else {
        return Vec::new();
    };
    a.iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix(PREFIX)?;
            let (s, e) = v.split_once('/')?;
            let start = super::parse_time(s, 0.0).ok()?;
            let end = match e.trim() {
                "" => None,
                e => Some(super::parse_time(e, 0.0).ok()?),
            };
            (check_name(name).is_ok() && end.is_none_or(|e| e >= start)).then(|| Mark {
                name: name.into(),
                start,
                end,
            })
        })
        .collect()
}

/// Sets (or with `remove`, deletes) the mark on the ElasticGateway; a mark given only an end
/// keeps its start. Returns the mark as written.
pub async fn set(
    client: &Client,
    gateway: &str,
    name: &str,
    start: Option<f64>,
    end: Option<f64>,
    remove: bool,
    now: f64,
) -> Result<Option<Mark>, Error> {
    check_name(name)?;
    let egw = super::snapshot::find_gateway(client, gateway).await?;
    let ns = egw.metadata.namespace.clone().unwrap_or_default();
    let egw_name = egw.metadata.name.clone().unwrap_or_default();
    let key = format!("{PREFIX}{name}");
    let existing = parse(egw.metadata.annotations.as_ref())
        .into_iter()
        .find(|m| m.name == name);
    let mark = (!remove)
        .then(|| {
            let start = start.or(existing.as_ref().map(|m| m.start)).unwrap_or(now);
            let end = end.or(existing.as_ref().and_then(|m| m.end));
            if let Some(e) = end.filter(|e| *e < start) {
                return Err(Error::Window(format!(
                    "the drill's end {} is before its start {}",
                    rfc3339(e),
                    rfc3339(start)
                )));
            }
            Ok(Mark {
                name: name.into(),
                start,
                end,
            })
        })
        .transpose()?;
    let value = mark.as_ref().map(Mark::value);
    let patch = json!({"metadata": {"annotations": {key: value}}});
    Api::<ElasticGateway>::namespaced(client.clone(), &ns)
        .patch(&egw_name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| Error::Kube {
            what: format!("ElasticGateway {ns}/{egw_name}"),
            error: e.to_string(),
        })?;
    Ok(mark)
}

/// The instant queries giving a named drill's start and end, looking back `within` seconds.
pub fn window_queries(namespace: &str, gateway: &str, drill: &str, within: f64) -> [String; 2] {
    let sel = format!("namespace=\"{namespace}\",name=\"{gateway}\",drill=\"{drill}\"");
    let w = within.max(60.0) as u64;
    [
        format!("max(last_over_time(spillway_drill_start_timestamp_seconds{{{sel}}}[{w}s]))"),
        format!("max(last_over_time(spillway_drill_end_timestamp_seconds{{{sel}}}[{w}s]))"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_parse_from_annotations() {
        let a: BTreeMap<String, String> = [
            (
                "drill.spillway.io/sale-rehearsal",
                "2026-11-20T09:00:00Z/2026-11-20T09:30:00Z",
            ),
            ("drill.spillway.io/running", "2026-11-20T10:00:00Z/"),
            (
                "drill.spillway.io/backwards",
                "2026-11-20T10:00:00Z/2026-11-20T09:00:00Z",
            ),
            ("drill.spillway.io/garbage", "yesterday"),
            ("other.io/x", "2026-11-20T09:00:00Z/"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let marks = parse(Some(&a));
        assert_eq!(marks.len(), 2, "{marks:?}");
        let m = marks.iter().find(|m| m.name == "sale-rehearsal").unwrap();
        assert_eq!((m.start, m.end), (1_795_165_200.0, Some(1_795_167_000.0)));
        assert_eq!(m.value(), "2026-11-20T09:00:00Z/2026-11-20T09:30:00Z");
        assert!(m.active(1_795_166_000.0) && !m.active(1_795_168_000.0));
        let open = marks.iter().find(|m| m.name == "running").unwrap();
        assert!(open.end.is_none() && open.active(2e9));
        assert!(check_name("Black-Friday.2026").is_ok());
        for bad in ["", "-x", "a/b", "spaces here", &"x".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}

//! Marking a drill on its ElasticGateway (the annotation of [`crate::policy::marks`]), and the
//! queries that find a marked window again in Prometheus: the shipped dashboard shows
//! `spillway_drill_active` as an annotation, and `spillway drill score --name` finds the window
//! from the start and end timestamps.

use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::Error;
use crate::clock::rfc3339;
use crate::policy::ElasticGateway;
use crate::policy::marks::{Mark, PREFIX, parse, valid_name};

/// A drill's name, checked before it becomes an annotation key and a label value.
pub fn check_name(name: &str) -> Result<(), Error> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(Error::Window(format!(
            "drill name {name:?}: use 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        )))
    }
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

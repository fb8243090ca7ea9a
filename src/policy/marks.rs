//! Drill marks: an annotation `drill.spillway.io/NAME: "START/END"` (RFC 3339; END empty while
//! the drill runs) on the ElasticGateway. The agent exports every mark as
//! `spillway_drill_active` (1 inside the window), `spillway_drill_start_timestamp_seconds` and
//! `spillway_drill_end_timestamp_seconds`; `spillway drill mark` writes them
//! ([`crate::replay::marks`]).

use std::collections::BTreeMap;

use crate::clock::{parse_time, rfc3339};

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

    /// The annotation's value.
    pub fn value(&self) -> String {
        format!(
            "{}/{}",
            rfc3339(self.start),
            self.end.map(rfc3339).unwrap_or_default()
        )
    }
}

/// A name usable as an annotation key's name part and a label value: 1 to 63 letters, digits,
/// '-', '_' or '.', starting and ending with a letter or digit.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
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
            let start = parse_time(s, 0.0).ok()?;
            let end = match e.trim() {
                "" => None,
                e => Some(parse_time(e, 0.0).ok()?),
            };
            (valid_name(name) && end.is_none_or(|e| e >= start)).then(|| Mark {
                name: name.into(),
                start,
                end,
            })
        })
        .collect()
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
        assert!(valid_name("Black-Friday.2026"));
        for bad in ["", "-x", "a/b", "spaces here", &"x".repeat(64)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}

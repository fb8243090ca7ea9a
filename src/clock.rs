//! The wall clock, read only at the edges (the agent, the CLI): the engine and the drill take
//! the time as an argument.

/// Seconds since the Unix epoch now (0 if the clock is before 1970).
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Formats Unix seconds as RFC 3339 (UTC), to the second.
pub fn rfc3339(unix: f64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(unix.floor() as i64)
        .map_or_else(|_| format!("{unix:.0}"), |t| t.to_string())
}

/// Parses a time as `--start`/`--end` take it: RFC 3339 (`2026-11-20T09:00:00Z`), Unix seconds,
/// `now`, or `now-<duration>` (`now-2h`, `now-90m`).
pub fn parse_time(s: &str, now: f64) -> Result<f64, String> {
    let s = s.trim();
    if s == "now" {
        return Ok(now);
    }
    if let Some(ago) = s.strip_prefix("now-") {
        let d: k8s_openapi::jiff::SignedDuration = ago
            .parse()
            .map_err(|e| format!("{s:?}: {ago:?} is not a duration like 2h or 90m: {e}"))?;
        return Ok(now - d.as_secs_f64());
    }
    if let Ok(x) = s.parse::<f64>() {
        return if x.is_finite() && x > 0.0 {
            Ok(x)
        } else {
            Err(format!("{s:?} is not a Unix time"))
        };
    }
    s.parse::<k8s_openapi::jiff::Timestamp>()
        .map(|t| t.as_millisecond() as f64 / 1000.0)
        .map_err(|e| {
            format!("{s:?} is not a time like 2026-11-20T09:00:00Z, a Unix time, or now-2h: {e}")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_an_sre_writes_them() {
        let now = 1_800_000_000.0;
        assert_eq!(parse_time("now", now), Ok(now));
        assert_eq!(parse_time("now-2h", now), Ok(now - 7200.0));
        assert_eq!(parse_time("1700000000", now), Ok(1_700_000_000.0));
        assert_eq!(parse_time("2026-11-20T09:00:00Z", now), Ok(1_795_165_200.0));
        for bad in ["yesterday", "now-soon", "-5", "2026-13-01T00:00:00Z"] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
        assert_eq!(rfc3339(1_795_165_200.0), "2026-11-20T09:00:00Z");
    }

    #[test]
    fn rfc3339_is_utc_to_the_second() {
        assert_eq!(super::rfc3339(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_700_000_000.9), "2023-11-14T22:13:20Z");
        assert!(super::unix_now() > 1_700_000_000.0);
    }
}

//! Secrets never printed: URLs lose their user information and the values of query parameters
//! that look like credentials before they reach a log line, a status or an Event.

/// Query parameters whose values are treated as secrets.
const SECRET_PARAMS: [&str; 8] = [
    "token",
    "access_token",
    "password",
    "passwd",
    "secret",
    "key",
    "apikey",
    "auth",
];

/// `url` with any `user:password@` and secret-looking query values replaced by `REDACTED`. A
/// string that does not parse as a URL is not printed at all.
pub fn url(url: &str) -> String {
    let Ok(mut u) = reqwest::Url::parse(url) else {
        return "(an unparsable URL, not shown)".into();
    };
    if !u.username().is_empty() {
        let _ = u.set_username("REDACTED");
    }
    if u.password().is_some() {
        let _ = u.set_password(Some("REDACTED"));
    }
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let secret = SECRET_PARAMS
                    .iter()
                    .any(|s| k.to_ascii_lowercase().contains(s));
                (
                    k.into_owned(),
                    if secret {
                        "REDACTED".into()
                    } else {
                        v.into_owned()
                    },
                )
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

/// `text` with every occurrence of `secret` replaced (for messages built by libraries that may
/// echo a URL back).
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 3) {
        out = out.replace(s, "REDACTED");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_survive() {
        let u = url("https://alice:s3cr3t@prom.example:9090/p?x=1&token=abc123");
        assert!(
            !u.contains("s3cr3t") && !u.contains("alice") && !u.contains("abc123"),
            "{u}"
        );
        assert!(u.contains("prom.example:9090") && u.contains("x=1"), "{u}");
        assert_eq!(url("http://prom:9090"), "http://prom:9090/");
        assert!(!url("not a url s3cr3t").contains("s3cr3t"));
        assert_eq!(
            scrub("GET http://a:pw123@h/", &["pw123"]),
            "GET http://a:REDACTED@h/"
        );
    }
}

//! Kubernetes resource quantities ("500m", "2", "1Gi", "1.5G") as integers.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "invalid quantity {0:?}: expected a number with an optional suffix (m, k, M, G, Ki, Mi, Gi, Ti)"
)]
pub struct QuantityError(pub String);

/// Splits "1.5Gi" into (1.5, multiplier). Binary and decimal SI suffixes, and `m` (milli).
fn parse(q: &str) -> Result<f64, QuantityError> {
    let s = q.trim();
    let err = || QuantityError(q.to_string());
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| err())?;
    if !n.is_finite() || n < 0.0 {
        return Err(err());
    }
    let mul = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(err()),
    };
    Ok(n * mul)
}

/// CPU in millicores, rounded up as the API server does for sub-milli precision.
pub fn cpu_millis(q: &str) -> Result<i64, QuantityError> {
    Ok((parse(q)? * 1000.0).ceil() as i64)
}

/// Memory (or any plain quantity) in bytes, rounded up.
pub fn bytes(q: &str) -> Result<i64, QuantityError> {
    Ok(parse(q)?.ceil() as i64)
}

/// Renders millicores the way `kubectl` prints them.
pub fn format_cpu(millis: i64) -> String {
    if millis % 1000 == 0 {
        format!("{}", millis / 1000)
    } else {
        format!("{millis}m")
    }
}

/// Renders bytes with the largest exact binary suffix.
pub fn format_bytes(b: i64) -> String {
    for (suffix, m) in [
        ("Ti", 1i64 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if b != 0 && b % m == 0 {
            return format!("{}{suffix}", b / m);
        }
    }
    b.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(cpu_millis("500m"), Ok(500));
        assert_eq!(cpu_millis("2"), Ok(2000));
        assert_eq!(cpu_millis("0.25"), Ok(250));
        assert_eq!(bytes("1Gi"), Ok(1 << 30));
        assert_eq!(bytes("512Mi"), Ok(512 << 20));
        assert_eq!(bytes("1G"), Ok(1_000_000_000));
        assert!(bytes("1Qi").is_err());
        assert!(bytes("-1").is_err());
        assert!(cpu_millis("").is_err());
    }

    #[test]
    fn formats_round_trip() {
        assert_eq!(format_cpu(1500), "1500m");
        assert_eq!(format_cpu(2000), "2");
        assert_eq!(format_bytes(2 << 30), "2Gi");
        assert_eq!(bytes(&format_bytes(768 << 20)), Ok(768 << 20));
    }
}

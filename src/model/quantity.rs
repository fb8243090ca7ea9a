//! Kubernetes resource quantities ("500m", "2", "1Gi", "1.5G", "12e6") as exact integers.
//!
//! The grammar and the rounding are those of apimachinery's `resource.ParseQuantity` and
//! `Quantity.ScaledValue`: a decimal number (`1`, `1.5`, `.5`, `5.`) with an optional sign and
//! one suffix — binary SI (`Ki` … `Ei`), decimal SI (`n`, `u`, `m`, none, `k`, `M` … `E`) or a
//! decimal exponent (`e3`, `E-2`) — converted without floating point and rounded up to the unit
//! asked for, as the API server rounds a request to millicores or bytes.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "invalid quantity {0:?}: expected a non-negative number with an optional suffix (m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei) or exponent (e3)"
)]
pub struct QuantityError(pub String);

/// A parsed quantity: `mantissa × 10^exp10 × 2^exp2`, never negative.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Exact {
    mantissa: u128,
    exp10: i32,
    exp2: u32,
}

fn parse(q: &str) -> Result<Exact, QuantityError> {
    let err = || QuantityError(q.to_string());
    let s = q.trim();
    let (negative, s) = match s.as_bytes().first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    let number_len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_len);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return Err(err());
    }
    let (exp10, exp2) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        _ => {
            let exp = suffix
                .strip_prefix(['e', 'E'])
                .filter(|e| {
                    let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
                })
                .ok_or_else(err)?;
            (exp.parse::<i32>().map_err(|_| err())?, 0)
        }
    };
    // Leading zeros of the integer part and trailing zeros of the fraction carry nothing.
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let mut mantissa: u128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        mantissa = mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(u128::from(b - b'0')))
            .ok_or_else(err)?;
    }
    if negative && mantissa != 0 {
        return Err(err());
    }
    let frac_len = i32::try_from(frac.len()).map_err(|_| err())?;
    Ok(Exact {
        mantissa,
        exp10: exp10.checked_sub(frac_len).ok_or_else(err)?,
        exp2,
    })
}

impl Exact {
    /// The value in units of `10^-scale`, rounded up (`scale` 3: milli-units).
    fn scaled_ceil(self, scale: i32) -> Option<i64> {
        let n = self.mantissa.checked_mul(1u128.checked_shl(self.exp2)?)?;
        let p = self.exp10.checked_add(scale)?;
        let v = if n == 0 {
            0
        } else if p >= 0 {
            n.checked_mul(10u128.checked_pow(u32::try_from(p).ok()?)?)?
        } else {
            // A divisor beyond u128 leaves a positive value below one unit: it rounds up to 1.
            match 10u128.checked_pow(p.unsigned_abs()) {
                Some(d) => n.div_ceil(d),
                None => 1,
            }
        };
        i64::try_from(v).ok()
    }
}

/// CPU in millicores, rounded up as the API server does (`Quantity.MilliValue`).
pub fn cpu_millis(q: &str) -> Result<i64, QuantityError> {
    parse(q)?
        .scaled_ceil(3)
        .ok_or_else(|| QuantityError(q.to_string()))
}

/// Memory (or any plain quantity) in units, rounded up (`Quantity.Value`).
pub fn bytes(q: &str) -> Result<i64, QuantityError> {
    parse(q)?
        .scaled_ceil(0)
        .ok_or_else(|| QuantityError(q.to_string()))
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
    use proptest::prelude::*;

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

    /// The values the float parser got wrong.
    #[test]
    fn millicores_are_exact() {
        assert_eq!(cpu_millis("9m"), Ok(9));
        assert_eq!(cpu_millis("102m"), Ok(102));
        assert_eq!(cpu_millis("0.1"), Ok(100));
        assert_eq!(cpu_millis("1.001"), Ok(1001));
        assert_eq!(cpu_millis("0.3"), Ok(300));
    }

    /// Every form apimachinery's ParseQuantity accepts, with its MilliValue/Value.
    #[test]
    fn accepts_what_kubernetes_accepts() {
        for (q, millis) in [
            ("1", 1000),
            ("+1", 1000),
            ("-0", 0),
            ("1.", 1000),
            (".5", 500),
            ("0.5", 500),
            ("1e3", 1_000_000),
            ("1E3", 1_000_000),
            ("1e-3", 1),
            ("1.5e+2", 150_000),
            ("100n", 1),
            ("1u", 1),
            ("1000000n", 1),
            ("1500000n", 2),
            ("0.0001", 1),
            ("1k", 1_000_000),
            ("0m", 0),
            ("0.000", 0),
        ] {
            assert_eq!(cpu_millis(q), Ok(millis), "{q}");
        }
        for (q, b) in [
            ("1Ki", 1024),
            ("1.5Ki", 1536),
            ("1Pi", 1 << 50),
            ("1Ei", 1 << 60),
            ("1P", 1_000_000_000_000_000),
            ("1E", 1_000_000_000_000_000_000),
            ("129e6", 129_000_000),
            ("128974848", 128_974_848),
            ("123Mi", 123 << 20),
            ("0.5", 1),
            ("1m", 1),
            ("1001m", 2),
        ] {
            assert_eq!(bytes(q), Ok(b), "{q}");
        }
        for bad in [
            ".", "1..2", "1.2.3", "e3", "1e", "1e+", "1ee3", "Mi", "1 Mi", "1mi", "1KiB", "1K",
            "--1", "-1m", "1e3.5", "abc", "16Ei",
        ] {
            assert!(bytes(bad).is_err(), "{bad} must be rejected");
        }
    }

    proptest! {
        #[test]
        fn millicores_round_trip(m in 0i64..10_000_000_000) {
            prop_assert_eq!(cpu_millis(&format!("{m}m")), Ok(m));
            prop_assert_eq!(cpu_millis(&format_cpu(m)), Ok(m));
            let decimal = format!("{}.{:03}", m / 1000, m % 1000);
            prop_assert_eq!(cpu_millis(&decimal), Ok(m));
            prop_assert_eq!(cpu_millis(&format!("{m}e-3")), Ok(m));
        }

        #[test]
        fn sub_milli_rounds_up(m in 0i64..1_000_000, extra in 1u32..999) {
            // m millicores plus a fraction of one: the next millicore, as MilliValue rounds.
            let q = format!("{}.{:03}{:03}", m / 1000, m % 1000, extra);
            prop_assert_eq!(cpu_millis(&q), Ok(m + 1));
        }

        #[test]
        fn binary_and_decimal_suffixes_are_exact(n in 0i64..1_000_000, i in 0usize..4) {
            let (bin, dec) = [("Ki", "k"), ("Mi", "M"), ("Gi", "G"), ("Ti", "T")][i];
            let shift = 10 * (i as u32 + 1);
            prop_assert_eq!(bytes(&format!("{n}{bin}")), Ok(n << shift));
            prop_assert_eq!(bytes(&format!("{n}{dec}")), Ok(n * 1000i64.pow(i as u32 + 1)));
            prop_assert_eq!(bytes(&format!("{n}e{}", 3 * (i + 1))), Ok(n * 1000i64.pow(i as u32 + 1)));
            prop_assert_eq!(bytes(&format_bytes(n << shift)), Ok(n << shift));
        }
    }
}

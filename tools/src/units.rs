//! Sizes and durations as operators write them, with fio's conventions:
//! `4k`, `64M`, `1g`, `1GiB` are powers of 1024; a bare number is bytes
//! (or seconds, for durations).

/// Parses a size such as `4096`, `4k`, `64MiB`, `10G`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    if digits.is_empty() {
        return Err(format!("invalid size {text:?}: expected a number with an optional k/m/g/t suffix"));
    }
    let n: u64 = digits.parse().map_err(|_| format!("invalid size {text:?}: number too large"))?;
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        "p" | "pb" | "pib" => 50,
        _ => return Err(format!("invalid size {text:?}: unknown suffix {suffix:?} (use k, m, g, t)")),
    };
    n.checked_mul(1u64 << shift).ok_or_else(|| format!("invalid size {text:?}: too large"))
}

/// Parses a duration in fio's style into microseconds: `30` (seconds),
/// `500ms`, `2m`, `1h`, `100us`.
pub fn parse_duration_us(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("invalid duration {text:?}"))?;
    let mult = match suffix.to_ascii_lowercase().as_str() {
        "" | "s" => 1_000_000,
        "ms" => 1_000,
        "us" => 1,
        "m" => 60_000_000,
        "h" => 3_600_000_000,
        "d" => 86_400_000_000,
        _ => return Err(format!("invalid duration {text:?}: unknown unit {suffix:?} (use us, ms, s, m, h)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("invalid duration {text:?}: too large"))
}

/// `1536` -> `1.5KiB`, for human output.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n}B")
    } else if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}{}", UNITS[unit])
    } else {
        format!("{v:.1}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_fio() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("4k").unwrap(), 4096);
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert!(parse_size("12q").unwrap_err().contains("unknown suffix"));
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999999t").unwrap_err().contains("too large"));
    }

    #[test]
    fn durations_follow_fio() {
        assert_eq!(parse_duration_us("30").unwrap(), 30_000_000);
        assert_eq!(parse_duration_us("500ms").unwrap(), 500_000);
        assert_eq!(parse_duration_us("2m").unwrap(), 120_000_000);
        assert!(parse_duration_us("5x").is_err());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(64 << 20), "64MiB");
        assert_eq!(human_bytes(1536), "1.5KiB");
    }
}

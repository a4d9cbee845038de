//! The values of shardbench's options: numbers, block sizes, booleans,
//! `bssplit` lists and fio's per-direction `R,W` form, each refused
//! with an error naming the option.

use crate::units::parse_size;

pub(super) fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("option {key}: expected 0 or 1, got {value:?}")),
    }
}

pub(super) fn parse_u32(key: &str, value: &str, min: u32, max: u32) -> Result<u32, String> {
    let n: u32 = value.parse().map_err(|_| format!("option {key}: expected a number, got {value:?}"))?;
    if n < min || n > max {
        return Err(format!("option {key}: {n} is outside {min}..={max}"));
    }
    Ok(n)
}

pub(super) fn parse_block_size(key: &str, value: &str) -> Result<u64, String> {
    let bs = parse_size(value).map_err(|e| format!("option {key}: {e}"))?;
    if bs == 0 || bs % 512 != 0 || bs > shardstore::constants::IO_SIZE_BYTES_MAX {
        return Err(format!("option {key}: {bs} must be a non-zero multiple of 512 up to 64MiB"));
    }
    Ok(bs)
}

/// fio lets block-size options differ by direction (`4k,64k`); shardbench
/// takes one setting for both.
pub(super) fn no_split_by_direction(key: &str, value: &str) -> Result<(), String> {
    if value.contains(',') {
        return Err(format!("option {key}: separate read/write settings (',') are not supported; give one for both"));
    }
    Ok(())
}

/// fio's `bssplit=4k/10:64k/50:32k/40`: sizes with their share in percent;
/// sizes with no share (`8k/`) split what the others leave.
pub(super) fn parse_bssplit(value: &str) -> Result<Vec<(u64, u32)>, String> {
    let mut list = Vec::new();
    let mut blank = 0;
    for part in value.split(':') {
        let (size, pct) = part.split_once('/').unwrap_or((part, ""));
        let bs = parse_block_size("bssplit", size)?;
        let pct = if pct.is_empty() {
            blank += 1;
            None
        } else {
            Some(parse_u32("bssplit", pct, 0, 100)?)
        };
        list.push((bs, pct));
    }
    let given: u32 = list.iter().filter_map(|&(_, p)| p).sum();
    if given > 100 || (blank == 0 && given != 100) {
        return Err(format!("option bssplit: the shares in {value:?} add up to {given}%, not 100%"));
    }
    let share = (100 - given).checked_div(blank).unwrap_or(0);
    let mut extra = (100 - given).checked_rem(blank).unwrap_or(0);
    Ok(list
        .into_iter()
        .map(|(bs, p)| {
            (
                bs,
                p.unwrap_or_else(|| {
                    let e = u32::from(extra > 0);
                    extra = extra.saturating_sub(1);
                    share + e
                }),
            )
        })
        .filter(|&(_, p)| p > 0)
        .collect())
}

/// fio's `R,W` form: one value for both directions, or `R,W`, `R,`, `,W`.
pub(super) fn parse_per_direction(
    key: &str,
    value: &str,
    parse: impl Fn(&str) -> Result<u64, String>,
) -> Result<[u64; 2], String> {
    let one = |v: &str| if v.is_empty() { Ok(0) } else { parse(v).map_err(|e| format!("option {key}: {e}")) };
    match value.split_once(',') {
        None => {
            let v = one(value)?;
            Ok([v, v])
        }
        Some((r, w)) => Ok([one(r)?, one(w)?]),
    }
}

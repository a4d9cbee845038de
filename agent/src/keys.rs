//! Shard keys in URLs: any bytes, 1 to 255 of them, percent-encoded as one
//! path segment (`/` inside a key is `%2F`).

use std::fmt::Write;

use shardstore::store::record::KEY_SIZE_BYTES_MAX;

#[derive(Debug, PartialEq, Eq)]
pub enum KeyError {
    Empty,
    TooLong(usize),
    BadEscape(String),
    RawSlash,
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Empty => write!(f, "the key is empty (keys are 1 to {KEY_SIZE_BYTES_MAX} bytes)"),
            KeyError::TooLong(n) => write!(f, "the key is {n} bytes long (keys are 1 to {KEY_SIZE_BYTES_MAX} bytes)"),
            KeyError::BadEscape(s) => write!(f, "invalid percent-encoding {s:?} (expected % and two hex digits)"),
            KeyError::RawSlash => {
                write!(f, "the key spans more than one path segment (encode `/` inside a key as %2F)")
            }
        }
    }
}

/// Decodes percent-escapes (and nothing else: `+` stays `+`).
pub fn decode_component(s: &str) -> Result<Vec<u8>, KeyError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex.filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit())).map(|h| u8::from_str_radix(h, 16));
            match byte {
                Some(Ok(v)) => out.push(v),
                _ => {
                    return Err(KeyError::BadEscape(String::from_utf8_lossy(&b[i..(i + 3).min(b.len())]).into_owned()))
                }
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// A key from the raw path segment after `/v1/shards/`.
pub fn decode_key(raw: &str) -> Result<Vec<u8>, KeyError> {
    if raw.contains('/') {
        return Err(KeyError::RawSlash);
    }
    let key = decode_component(raw)?;
    match key.len() {
        0 => Err(KeyError::Empty),
        n if n > KEY_SIZE_BYTES_MAX => Err(KeyError::TooLong(n)),
        _ => Ok(key),
    }
}

/// A key as it appears in a URL (and in listings): unreserved characters
/// as they are, every other byte as `%XX`.
pub fn encode_key(key: &[u8]) -> String {
    let mut s = String::with_capacity(key.len());
    for &b in key {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            s.push(b as char);
        } else {
            let _ = write!(s, "%{b:02X}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_urls() {
        for key in [&b"a"[..], b"photos/2026/cat.jpg", b"\x00\xff spaces+plus%", &[b'k'; 255]] {
            assert_eq!(decode_key(&encode_key(key)).unwrap(), key);
        }
    }

    #[test]
    fn bad_keys_are_named() {
        assert_eq!(decode_key(""), Err(KeyError::Empty));
        assert_eq!(decode_key(&"k".repeat(256)), Err(KeyError::TooLong(256)));
        assert_eq!(decode_key(&"%41".repeat(256)), Err(KeyError::TooLong(256)));
        assert_eq!(decode_key("a%4"), Err(KeyError::BadEscape("%4".into())));
        assert_eq!(decode_key("a%zz"), Err(KeyError::BadEscape("%zz".into())));
        assert_eq!(decode_key("a/b"), Err(KeyError::RawSlash));
        assert_eq!(decode_key("a%2Fb").unwrap(), b"a/b");
    }
}

//! Percent-escape normalization (RFC 3986 §6.2.2.1–2), shared by resource parsing and request
//! coverage so that both sides of a comparison are normalized by the same code.

/// RFC 3986 §2.3: ALPHA / DIGIT / "-" / "." / "_" / "~".
pub(crate) fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 §2.2 sub-delims (the definition the `PCHAR` table is tested against).
#[cfg(test)]
fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

/// RFC 3986 §3.3 pchar, less pct-encoded (handled by the caller).
pub(crate) fn is_pchar(b: u8) -> bool {
    PCHAR[usize::from(b)]
}

/// [`is_pchar`] for every byte, computed once at compile time: the path and query of every
/// resource are checked against it byte by byte.
static PCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        // `b < 256`, so the cast keeps it.
        #[allow(clippy::cast_possible_truncation)]
        let byte = b as u8;
        table[b] = byte.is_ascii_alphanumeric()
            || matches!(
                byte,
                b'-' | b'.' | b'_' | b'~' // unreserved
                    | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' // sub-delims
                    | b':' | b'@'
            );
        b += 1;
    }
    table
};

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The escape starting at `at`, decoded, if it is well formed.
pub(crate) fn escape_at(bytes: &[u8], at: usize) -> Option<u8> {
    let hi = hex_value(*bytes.get(at + 1)?)?;
    let lo = hex_value(*bytes.get(at + 2)?)?;
    Some(hi << 4 | lo)
}

/// A `%` at byte `at` not followed by two hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MalformedEscape {
    pub(crate) at: usize,
    pub(crate) text: String,
}

/// Decodes escapes of unreserved characters and writes every other escape in uppercase hex.
/// Characters that are not escapes are copied as they are.
pub(crate) fn normalize(s: &str) -> Result<String, MalformedEscape> {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            // Copy the run up to the next '%' in one go (it is valid UTF-8: it came from a str
            // and '%' is ASCII, so the boundaries are character boundaries).
            let end = s[i..].find('%').map_or(bytes.len(), |n| i + n);
            out.push_str(&s[i..end]);
            i = end;
            continue;
        }
        match escape_at(bytes, i) {
            Some(decoded) if is_unreserved(decoded) => out.push(char::from(decoded)),
            Some(decoded) => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(char::from(HEX[usize::from(decoded >> 4)]));
                out.push(char::from(HEX[usize::from(decoded & 0xf)]));
            }
            None => {
                let end = (i + 3).min(bytes.len());
                let text = String::from_utf8_lossy(&bytes[i..end]).into_owned();
                return Err(MalformedEscape { at: i, text });
            }
        }
        i += 3;
    }
    Ok(out)
}

/// Decodes every well-formed escape once; a malformed one is kept as it is.
#[cfg(test)]
pub(crate) fn decode_all(s: &str) -> Vec<u8> {
    decode_once(s.as_bytes())
}

/// Decodes every well-formed escape, then the result again, until nothing changes: what a
/// chain of servers and proxies that each decode before routing would see at its end
/// (`%252e` is `%2e` after one decoding and `.` after two). Each pass that changes anything
/// shortens the bytes, so there are at most `len / 3` passes; most paths take one.
pub(crate) fn decode_to_fixed_point(s: &str) -> Vec<u8> {
    let mut decoded = decode_once(s.as_bytes());
    while decoded.contains(&b'%') {
        let again = decode_once(&decoded);
        if again.len() == decoded.len() {
            break;
        }
        decoded = again;
    }
    decoded
}

fn decode_once(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(decoded) = escape_at(bytes, i)
        {
            out.push(decoded);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pchar_table_is_rfc_3986s_pchar() {
        for b in 0..=u8::MAX {
            let pchar = is_unreserved(b) || is_sub_delim(b) || matches!(b, b':' | b'@');
            assert_eq!(is_pchar(b), pchar, "{b:#04x}");
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_uppercased() {
        assert_eq!(normalize("/%7Euser").unwrap(), "/~user");
        assert_eq!(normalize("/%41bc").unwrap(), "/Abc");
        assert_eq!(normalize("/caf%c3%a9").unwrap(), "/caf%C3%A9");
        assert_eq!(normalize("/a%2fb").unwrap(), "/a%2Fb");
        assert_eq!(normalize("/plain").unwrap(), "/plain");
    }

    #[test]
    fn malformed_escapes_are_reported_with_their_text() {
        let err = normalize("/a%2").unwrap_err();
        assert_eq!((err.at, err.text.as_str()), (2, "%2"));
        let err = normalize("/%zz/x").unwrap_err();
        assert_eq!((err.at, err.text.as_str()), (1, "%zz"));
        assert_eq!(normalize("%").unwrap_err().text, "%");
    }

    #[test]
    fn decode_all_decodes_reserved_and_keeps_malformed() {
        assert_eq!(decode_all("/a%2Fb%5c%zz"), b"/a/b\\%zz");
    }

    #[test]
    fn decoding_to_a_fixed_point_undoes_every_layer() {
        assert_eq!(decode_to_fixed_point("/%252e%252e/x"), b"/../x");
        assert_eq!(decode_to_fixed_point("/%25252F"), b"//");
        assert_eq!(decode_to_fixed_point("/%25%32%65"), b"/.");
        // A literal `%` that never becomes an escape stays, and so does a malformed one.
        assert_eq!(decode_to_fixed_point("/100%25"), b"/100%");
        assert_eq!(decode_to_fixed_point("/%25zz%2"), b"/%zz%2");
        assert_eq!(decode_to_fixed_point("/plain"), b"/plain");
    }
}

//! A validated, normalised DNS host name: the SNI as snigate matches it.
//!
//! Normalisation is done once, here, so that every later stage (matching, logging, metrics)
//! sees the same canonical form: ASCII lowercase, one trailing dot dropped.

use std::fmt;

use thiserror::Error;

/// Longest name, in bytes, without the trailing dot (RFC 1035 2.3.4).
pub const MAX_NAME_LEN: usize = 253;
/// Longest label, in bytes (RFC 1035 2.3.4).
pub const MAX_LABEL_LEN: usize = 63;

/// A host name that passed [`Name::parse`]: LDH labels, lowercase, no trailing dot.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Box<str>);

/// Why a byte string is not an acceptable host name. Every variant maps to the
/// `invalid_sni` reason; the variant says which rule failed, for logs and `snigate hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum NameError {
    /// The name has no bytes (or is a lone dot).
    #[error("empty name")]
    Empty,
    /// Longer than 253 bytes once the trailing dot is dropped.
    #[error("name longer than 253 bytes")]
    TooLong,
    /// Two dots in a row, or a leading dot.
    #[error("empty label")]
    EmptyLabel,
    /// A label longer than 63 bytes.
    #[error("label longer than 63 bytes")]
    LabelTooLong,
    /// A label that starts or ends with `-` (RFC 952/1123).
    #[error("label starts or ends with '-'")]
    Hyphen,
    /// A byte outside letters, digits, `-` (and `_` when allowed): NUL, space, control bytes,
    /// non-ASCII (names on the wire are A-labels), `:`, `[`, …
    #[error("forbidden byte 0x{0:02x}")]
    Byte(u8),
    /// The last label is a number (all digits, or `0x` and hex digits): an IPv4 literal, or a
    /// form that C resolvers and URL parsers read as one (`127.1`, `0x7f000001`, `0177.0.0.1`).
    /// RFC 6066 forbids IP literals in SNI, and no top-level domain is numeric.
    #[error("IP literal")]
    IpLiteral,
}

/// A label an address parser reads as a number: decimal or octal digits, or `0x` followed by
/// hex digits (none at all included, which glibc reads as 0).
fn is_number(label: &[u8]) -> bool {
    match label {
        [b'0', b'x' | b'X', hex @ ..] => hex.iter().all(u8::is_ascii_hexdigit),
        digits => digits.iter().all(u8::is_ascii_digit),
    }
}

impl Name {
    /// Validates `raw` as an RFC 1123 host name and normalises it.
    ///
    /// `allow_underscore` admits `_` inside labels (seen in some internal names; off by default).
    pub fn parse(raw: &[u8], allow_underscore: bool) -> Result<Name, NameError> {
        let raw = raw.strip_suffix(b".").unwrap_or(raw);
        if raw.is_empty() {
            return Err(NameError::Empty);
        }
        if raw.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        let mut last_label: &[u8] = &[];
        for label in raw.split(|&b| b == b'.') {
            check_label(label, allow_underscore)?;
            last_label = label;
        }
        if is_number(last_label) {
            return Err(NameError::IpLiteral);
        }
        // Every byte is ASCII after check_label, so this cannot fail.
        let lower = String::from_utf8(raw.to_ascii_lowercase()).map_err(|_| NameError::Byte(0x80))?;
        Ok(Name(lower.into_boxed_str()))
    }

    /// The normalised name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Labels from the rightmost (the TLD) to the leftmost.
    pub fn labels_rev(&self) -> impl Iterator<Item = &str> {
        self.0.rsplit('.')
    }
}

fn check_label(label: &[u8], allow_underscore: bool) -> Result<(), NameError> {
    match label {
        [] => return Err(NameError::EmptyLabel),
        l if l.len() > MAX_LABEL_LEN => return Err(NameError::LabelTooLong),
        [b'-', ..] | [.., b'-'] => return Err(NameError::Hyphen),
        _ => {}
    }
    match label.iter().find(|&&b| !(b.is_ascii_alphanumeric() || b == b'-' || (allow_underscore && b == b'_'))) {
        Some(&b) => Err(NameError::Byte(b)),
        None => Ok(()),
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({:?})", self.0)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_and_one_trailing_dot() {
        let n = Name::parse(b"Acme.My.SalesForce.COM.", false).unwrap();
        assert_eq!(n.as_str(), "acme.my.salesforce.com");
        assert_eq!(Name::parse(b"a.com..", false), Err(NameError::EmptyLabel));
        assert_eq!(Name::parse(b".", false), Err(NameError::Empty));
    }

    #[test]
    fn label_and_name_lengths() {
        let l63 = "a".repeat(63);
        assert!(Name::parse(format!("{l63}.com").as_bytes(), false).is_ok());
        let l64 = "a".repeat(64);
        assert_eq!(Name::parse(format!("{l64}.com").as_bytes(), false), Err(NameError::LabelTooLong));
        // 4 * 63 + 3 dots = 255 > 253; with a trailing dot the limit applies without it.
        let long = [l63.as_str(); 4].join(".");
        assert_eq!(Name::parse(long.as_bytes(), false), Err(NameError::TooLong));
        let exact = format!("{}.{}.{}.{}", l63, l63, l63, "a".repeat(61));
        assert_eq!(exact.len(), 253);
        assert!(Name::parse(format!("{exact}.").as_bytes(), false).is_ok());
    }

    #[test]
    fn rejects_bytes_ip_literals_and_hyphens() {
        let cases: &[(&[u8], NameError)] = &[
            (b"a\0b.com", NameError::Byte(0)),
            (b"a b.com", NameError::Byte(b' ')),
            ("caf\u{e9}.com".as_bytes(), NameError::Byte(0xc3)),
            (b"under_score.com", NameError::Byte(b'_')),
            (b"-a.com", NameError::Hyphen),
            (b"a-.com", NameError::Hyphen),
            (b"10.0.0.1", NameError::IpLiteral),
            (b"127.1", NameError::IpLiteral),
            (b"0x7f000001", NameError::IpLiteral),
            (b"0X7F.1", NameError::IpLiteral),
            (b"1.0x7f", NameError::IpLiteral),
            (b"0177.0.0.01", NameError::IpLiteral),
            (b"example.0x", NameError::IpLiteral),
            (b"[::1]", NameError::Byte(b'[')),
            (b"::1", NameError::Byte(b':')),
        ];
        for (raw, want) in cases {
            assert_eq!(Name::parse(raw, false), Err(*want), "{}", String::from_utf8_lossy(raw));
        }
        assert!(Name::parse(b"under_score.com", true).is_ok());
        assert!(Name::parse(b"xn--caf-dma.com", false).is_ok());
        assert!(Name::parse(b"1password.com", false).is_ok());
        assert!(Name::parse(b"0xdead.beef.com", false).is_ok(), "only the last label reads as a number");
        assert!(Name::parse(b"example.0xg", false).is_ok(), "not hex");
    }
}

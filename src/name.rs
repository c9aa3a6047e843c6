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

/// Eight bytes of a name at once (a little-endian word): the word with every ASCII capital
/// lowered, and a mask with the high bit of each byte that needs a look of its own: `.`, `_`
/// and any byte no label may hold. Letters, digits and `-` need none.
fn lower_word(word: u64) -> (u64, u64) {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = ONES * 0x80;
    // Each byte's low seven bits, so that no sum below carries into the next byte; a byte with
    // the high bit set is not ASCII, and in no range.
    let (low, ascii) = (word & !HIGH, !word & HIGH);
    // The high bit of each byte of `v` in lo..=hi: a byte plus 0x80 - lo reaches 0x80 from lo
    // on, and plus 0x7f - hi from hi + 1 on.
    let within =
        |v: u64, lo: u8, hi: u8| (v + ONES * u64::from(0x80 - lo)) & !(v + ONES * u64::from(0x7f - hi)) & ascii;
    // Setting 0x20 lowers a capital and leaves a small letter: one range finds both.
    let letter = within(low | (ONES * 0x20), b'a', b'z');
    let ordinary = letter | within(low, b'0', b'9') | within(low, b'-', b'-');
    (word | letter >> 2, !ordinary & HIGH)
}

impl Name {
    /// Validates `raw` as an RFC 1123 host name and normalises it, in one pass over its bytes
    /// that checks and lowers them together. A name breaking several rules gets the first
    /// label's error, and within a label its length and hyphens come before its bytes.
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
        let mut lower = raw.to_vec();
        // Where the current label starts, and the first byte in it that no label may hold.
        let (mut start, mut forbidden) = (0, None);
        // The bytes `special` marks in the word at `at`, in order.
        let mut look = |at: usize, mut special: u64| {
            while special != 0 {
                let i = at + special.trailing_zeros() as usize / 8;
                special &= special - 1;
                match raw[i] {
                    b'.' => {
                        check_label(&raw[start..i], forbidden)?;
                        (start, forbidden) = (i + 1, None);
                    }
                    b'_' if allow_underscore => {}
                    b => forbidden = forbidden.or(Some(b)),
                }
            }
            Ok(())
        };
        // Eight bytes at a time: most words of a name hold nothing but letters, digits and
        // hyphens, and need no look byte by byte.
        let (words, rest) = lower.as_chunks_mut::<8>();
        for (k, word) in words.iter_mut().enumerate() {
            let (lowered, special) = lower_word(u64::from_le_bytes(*word));
            *word = lowered.to_le_bytes();
            look(8 * k, special)?;
        }
        // The rest: in the word that ends at the name's end, over bytes lowered already
        // (lowering twice changes nothing) and looked at (they are skipped), or padded with a
        // letter in a name shorter than a word.
        let (len, rest) = (raw.len(), rest.len());
        if rest > 0 {
            let at = len.saturating_sub(8);
            let special = match <&mut [u8; 8]>::try_from(&mut lower[at..]) {
                Ok(word) => {
                    let (lowered, special) = lower_word(u64::from_le_bytes(*word));
                    *word = lowered.to_le_bytes();
                    special
                }
                Err(_) => {
                    let mut word = [b'a'; 8];
                    word[..len].copy_from_slice(&lower);
                    let (lowered, special) = lower_word(u64::from_le_bytes(word));
                    lower.copy_from_slice(&lowered.to_le_bytes()[..len]);
                    special
                }
            };
            look(at, special & u64::MAX << (8 * (len - rest - at)))?;
        }
        check_label(&raw[start..], forbidden)?;
        if is_number(&lower[start..]) {
            return Err(NameError::IpLiteral);
        }
        // Every byte is ASCII once the labels passed, so this cannot fail.
        let lower = String::from_utf8(lower).map_err(|_| NameError::Byte(0x80))?;
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

/// One label's rules, its bytes already checked: `forbidden` is the first one no label may hold.
fn check_label(label: &[u8], forbidden: Option<u8>) -> Result<(), NameError> {
    match (label, forbidden) {
        ([], _) => Err(NameError::EmptyLabel),
        (l, _) if l.len() > MAX_LABEL_LEN => Err(NameError::LabelTooLong),
        ([b'-', ..] | [.., b'-'], _) => Err(NameError::Hyphen),
        (_, Some(b)) => Err(NameError::Byte(b)),
        (_, None) => Ok(()),
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

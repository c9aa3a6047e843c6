//! A domain pattern, as written after `allow`/`deny`.
//!
//! Patterns are normalised exactly like [`Name`]: ASCII lowercase, one trailing dot dropped,
//! Unicode converted to punycode A-labels. Matching happens only on label boundaries.

use std::fmt;

use thiserror::Error;

use super::precedence::Kind;
use crate::name::{Name, NameError};

/// What a rule matches, as written after `allow`/`deny`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pattern {
    /// `*`: every name (catch-all).
    Any,
    /// `*.name`: any name strictly below `name`, at any depth; not `name` itself.
    Below(Name),
    /// `.name`: `name` itself and any name below it.
    Apex(Name),
    /// `pre*suf.parent`: one label directly below `parent` that starts with `pre` and ends
    /// with `suf` (the `*` matches zero or more characters inside that one label).
    Glob(Box<Glob>),
    /// `name`: exactly that name.
    Exact(Name),
}

/// The parts of a leftmost-label glob `prefix*suffix.parent`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Glob {
    /// Text before the `*` in the leftmost label (may be empty).
    pub prefix: Box<str>,
    /// Text after the `*` in the leftmost label (may be empty, but not both).
    pub suffix: Box<str>,
    /// The name the glob label sits directly below.
    pub parent: Name,
}

/// Why a pattern is malformed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PatternError {
    /// The name part is not a valid host name.
    #[error("invalid name: {0}")]
    Name(#[from] NameError),
    /// Unicode that IDNA (UTS #46) cannot convert to an A-label.
    #[error("cannot convert to punycode (IDNA): {0}")]
    Idna(String),
    /// A `*` anywhere other than inside the leftmost label, or more than one `*`.
    #[error("'*' is allowed only once, in the leftmost label")]
    MisplacedStar,
    /// A glob label with nothing under it (`foo*`).
    #[error("a glob needs a parent domain (pre*suf.example.com)")]
    GlobWithoutParent,
    /// Non-ASCII text in a glob label: a partial label has no punycode form.
    #[error("a glob label must be ASCII (write its punycode form)")]
    UnicodeGlob,
    /// An empty pattern.
    #[error("empty pattern")]
    Empty,
}

impl Pattern {
    /// Parses one pattern as written in a rule file.
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        if text == "*" {
            return Ok(Pattern::Any);
        }
        if let Some(rest) = text.strip_prefix("*.") {
            return Ok(Pattern::Below(parse_name(rest)?));
        }
        if let Some(rest) = text.strip_prefix('.') {
            return Ok(Pattern::Apex(parse_name(rest)?));
        }
        let (first, parent) = match text.split_once('.') {
            Some((first, parent)) => (first, Some(parent)),
            None => (text, None),
        };
        let Some((prefix, suffix)) = first.split_once('*') else {
            return Ok(Pattern::Exact(parse_name(text)?));
        };
        if suffix.contains('*') {
            return Err(PatternError::MisplacedStar);
        }
        let parent = match parent {
            Some(p) if !p.is_empty() && p != "." => parse_name(p)?,
            _ => return Err(PatternError::GlobWithoutParent),
        };
        if !first.is_ascii() {
            return Err(PatternError::UnicodeGlob);
        }
        // Validate the label as if the `*` matched one letter: this applies the LDH, hyphen
        // and length rules of `Name` to the fixed parts.
        let probe = format!("{prefix}a{suffix}.{parent}");
        Name::parse(probe.as_bytes(), true)?;
        Ok(Pattern::Glob(Box::new(Glob {
            prefix: prefix.to_ascii_lowercase().into(),
            suffix: suffix.to_ascii_lowercase().into(),
            parent,
        })))
    }

    /// Whether the pattern matches `name` (ignoring any source scope).
    pub fn matches(&self, name: &Name) -> bool {
        let n = name.as_str();
        match self {
            Pattern::Any => true,
            Pattern::Exact(x) => n == x.as_str(),
            Pattern::Apex(x) => n == x.as_str() || is_strictly_below(n, x.as_str()),
            Pattern::Below(x) => is_strictly_below(n, x.as_str()),
            Pattern::Glob(g) => match n.split_once('.') {
                Some((label, parent)) => parent == g.parent.as_str() && g.matches_label(label),
                None => false,
            },
        }
    }

    /// The pattern's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Pattern::Any => Kind::Any,
            Pattern::Below(_) => Kind::Below,
            Pattern::Apex(_) => Kind::Apex,
            Pattern::Glob(_) => Kind::Glob,
            Pattern::Exact(_) => Kind::Exact,
        }
    }

    /// Labels in the pattern's [`key`](Self::key); 0 for `*`.
    pub fn labels(&self) -> u8 {
        self.key().map_or(0, |k| label_count(k.as_str()))
    }

    /// The name a compiled matcher files this pattern under: the name itself, the suffix, or
    /// the glob's parent. `None` for `*`.
    pub fn key(&self) -> Option<&Name> {
        match self {
            Pattern::Any => None,
            Pattern::Below(x) | Pattern::Apex(x) | Pattern::Exact(x) => Some(x),
            Pattern::Glob(g) => Some(&g.parent),
        }
    }
}

impl Glob {
    /// Whether one label (no dots) matches `prefix*suffix`.
    pub fn matches_label(&self, label: &str) -> bool {
        label.len() >= self.prefix.len() + self.suffix.len()
            && label.starts_with(&*self.prefix)
            && label.ends_with(&*self.suffix)
    }
}

/// `n` ends with `.x`.
fn is_strictly_below(n: &str, x: &str) -> bool {
    n.len() > x.len() && n.ends_with(x) && n.as_bytes()[n.len() - x.len() - 1] == b'.'
}

/// Number of labels in a normalised name (at most 127).
pub(crate) fn label_count(name: impl AsRef<[u8]>) -> u8 {
    (name.as_ref().iter().filter(|&&b| b == b'.').count() + 1) as u8
}

/// Validates and normalises the name part of a pattern, converting Unicode to A-labels.
/// Patterns admit `_` (so rules can name such hosts when `sni_allow_underscore` is on).
fn parse_name(text: &str) -> Result<Name, PatternError> {
    if text.contains('*') {
        return Err(PatternError::MisplacedStar);
    }
    if text.is_ascii() {
        return Ok(Name::parse(text.as_bytes(), true)?);
    }
    let ascii = idna::domain_to_ascii(text).map_err(|e| PatternError::Idna(e.to_string()))?;
    Ok(Name::parse(ascii.as_bytes(), true)?)
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Any => f.write_str("*"),
            Pattern::Below(x) => write!(f, "*.{x}"),
            Pattern::Apex(x) => write!(f, ".{x}"),
            Pattern::Glob(g) => write!(f, "{}*{}.{}", g.prefix, g.suffix, g.parent),
            Pattern::Exact(x) => write!(f, "{x}"),
        }
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::parse(s.as_bytes(), false).unwrap()
    }

    #[test]
    fn parses_each_form_and_normalises() {
        let cases = [
            ("*", "*"),
            ("Login.Salesforce.COM.", "login.salesforce.com"),
            ("*.My.Salesforce.com", "*.my.salesforce.com"),
            (".force.com", ".force.com"),
            ("ACME--*.sandbox.my.salesforce.com", "acme--*.sandbox.my.salesforce.com"),
            ("*--c.vf.force.com", "*--c.vf.force.com"),
            ("bücher.example", "xn--bcher-kva.example"),
            ("*.bücher.example", "*.xn--bcher-kva.example"),
        ];
        for (text, want) in cases {
            assert_eq!(Pattern::parse(text).unwrap().to_string(), want, "{text}");
        }
    }

    #[test]
    fn rejects_malformed() {
        let cases = [
            ("a.*.com", PatternError::MisplacedStar),
            ("a**.com", PatternError::MisplacedStar),
            ("*.*.com", PatternError::MisplacedStar),
            ("foo*", PatternError::GlobWithoutParent),
            ("-a*.com", PatternError::Name(NameError::Hyphen)),
            ("a..com", PatternError::Name(NameError::EmptyLabel)),
            ("10.0.0.1", PatternError::Name(NameError::IpLiteral)),
            ("a b.com", PatternError::Name(NameError::Byte(b' '))),
            ("bü*.example", PatternError::UnicodeGlob),
            ("", PatternError::Empty),
        ];
        for (text, want) in cases {
            assert_eq!(Pattern::parse(text), Err(want), "{text}");
        }
    }

    #[test]
    fn matches_on_label_boundaries_only() {
        let p = Pattern::parse("*.my.salesforce.com").unwrap();
        assert!(p.matches(&name("acme.my.salesforce.com")));
        assert!(p.matches(&name("a.b.my.salesforce.com")));
        assert!(!p.matches(&name("my.salesforce.com")));
        assert!(!p.matches(&name("evilmy.salesforce.com")));
        let g = Pattern::parse("acme--*.sandbox.my.salesforce.com").unwrap();
        assert!(g.matches(&name("acme--uat.sandbox.my.salesforce.com")));
        assert!(!g.matches(&name("x.acme--uat.sandbox.my.salesforce.com")));
        assert!(!g.matches(&name("other--uat.sandbox.my.salesforce.com")));
    }
}

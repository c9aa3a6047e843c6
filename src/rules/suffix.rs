//! The public-suffix guard: an `allow *.X` or `allow .X` where `X` is a public suffix
//! (`com`, `co.uk`, `github.io`, `s3.amazonaws.com`) lets through anyone who registers a name
//! there, so it is a load error unless the configuration opts out.
//!
//! The list is Mozilla's Public Suffix List, compiled in by the `psl` crate (its ICANN and
//! private sections alike). Only suffixes the list names count: the list's implicit `*` rule
//! would make every unknown top-level label (`corp`, `internal`) a suffix, and internal zones
//! are what such wildcards are written for.

use psl::Psl;
use serde::Deserialize;

use super::pattern::Pattern;
use crate::name::Name;

/// The Public Suffix List compiled in: the `psl` crate's version, which is released with each
/// update of the list (a test ties it to `Cargo.lock`).
pub const PUBLIC_SUFFIX_LIST: &str = "psl 2.1.247";

/// `[rules] public_suffix_wildcards`: whether an `allow` wildcard or suffix rule may cover a
/// whole public suffix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublicSuffixWildcards {
    /// Refused: a load error naming the file, the line and the suffix.
    #[default]
    Deny,
    /// Accepted (opted out of the guard).
    Allow,
}

/// The public suffix a pattern covers whole, if any: the name of a `*.X` or `.X` pattern when
/// `X` is itself on the list. Exact names, globs (one label, not a whole zone) and `*` (which
/// says what it means) cover none.
pub fn covered_suffix(pattern: &Pattern) -> Option<&Name> {
    match pattern {
        Pattern::Below(x) | Pattern::Apex(x) => is_public_suffix(x.as_str()).then_some(x),
        Pattern::Any | Pattern::Exact(_) | Pattern::Glob(_) => None,
    }
}

/// Whether the list names `name` (normalised, no trailing dot) as a public suffix, through an
/// explicit or wildcard rule of either section.
pub fn is_public_suffix(name: &str) -> bool {
    let info = psl::List.find(name.rsplit('.').map(str::as_bytes));
    info.typ.is_some() && info.len == name.len()
}

/// Whether `name` (normalised) lies strictly below a registrable domain: `a.example.com` does,
/// `example.com` (the registrable domain itself) and `co.uk` (a suffix) do not. The list's
/// implicit `*` rule counts here, so that `svc.corp` is a registrable domain of the internal
/// `corp`. What `snigate learn` may collapse into a wildcard.
pub fn below_registrable(name: &str) -> bool {
    let info = psl::List.find(name.rsplit('.').map(str::as_bytes));
    let suffix_labels = name[name.len().saturating_sub(info.len)..].split('.').count();
    info.len < name.len() && name.split('.').count() >= suffix_labels + 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_on_the_list_are_suffixes_and_names_below_are_not() {
        let cases = [
            ("com", true),
            ("co.uk", true),
            ("github.io", true),
            ("s3.amazonaws.com", true),
            ("xn--p1ai", true),
            ("acme.github.io", false),
            ("example.com", false),
            ("force.com", false),
            ("internal", false),
        ];
        for (name, want) in cases {
            assert_eq!(is_public_suffix(name), want, "{name}");
        }
    }

    #[test]
    fn only_names_below_a_registrable_domain_are_below_it() {
        let cases = [
            ("my.salesforce.com", true),
            ("a.b.example.co.uk", true),
            ("svc.cluster.corp", true),
            ("salesforce.com", false),
            ("example.co.uk", false),
            ("co.uk", false),
            ("acme.github.io", false),
            ("x.acme.github.io", true),
            ("com", false),
            ("corp", false),
        ];
        for (name, want) in cases {
            assert_eq!(below_registrable(name), want, "{name}");
        }
    }

    #[test]
    fn the_version_is_the_locked_crates() {
        let lock = include_str!("../../Cargo.lock");
        let version = PUBLIC_SUFFIX_LIST.strip_prefix("psl ").unwrap();
        assert!(lock.contains(&format!("name = \"psl\"\nversion = \"{version}\"\n")), "Cargo.lock has another psl");
    }
}

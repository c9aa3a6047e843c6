//! Reading a configuration file so that one pass reports every problem: each unknown key (with
//! a did-you-mean) and each value of the wrong type, each at its place in the file.
//!
//! serde stops at the first error, so the file is parsed into a spanned TOML tree first; unknown
//! keys are taken out against the keys serde derives for each section's struct, then the tree is
//! deserialized again and again, each failing key taken out, until what remains deserializes.

use std::ops::Range;

use serde::de::{self, Deserialize, DeserializeOwned, Visitor};
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue, ValueDeserializer};

/// One problem found while reading: where (a byte offset), a stable code, and why.
#[derive(Debug)]
pub(super) struct Problem {
    /// The byte offset it is about, when known.
    pub at: Option<usize>,
    /// `toml_syntax`, `unknown_key`, `invalid_value` or `missing_key`.
    pub code: &'static str,
    /// What is wrong.
    pub reason: String,
}

/// The keys serde derives for `T` (renames applied): the one list of a section's keys, read
/// from the struct itself so that it cannot drift from it.
pub(super) fn keys_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

/// A deserializer that only records the field names a derived `Deserialize` asks for.
struct Probe<'a>(&'a mut &'static [&'static str]);

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("a probe"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("a probe"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

/// The closest of `known` to `key`, within two edits.
pub(super) fn did_you_mean<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known.iter().map(|k| (distance(key, k), *k)).filter(|&(d, _)| d <= 2).min_by_key(|&(d, _)| d).map(|(_, k)| k)
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != cb)).min(row[j] + 1).min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Takes the keys `known` lacks out of `table`, each a problem naming `section`.
pub(super) fn unknown_keys(table: &mut DeTable<'_>, known: &[&str], section: &str, problems: &mut Vec<Problem>) {
    let unknown: Vec<(String, usize)> = table
        .keys()
        .filter(|k| !known.contains(&k.get_ref().as_ref()))
        .map(|k| (k.get_ref().to_string(), k.span().start))
        .collect();
    for (name, at) in unknown {
        table.remove(name.as_str());
        let hint = match did_you_mean(&name, known) {
            Some(k) => format!(" (did you mean `{k}`?)"),
            None => format!(" (known: {})", known.join(", ")),
        };
        let reason = format!("unknown key `{name}` in {section}{hint}");
        problems.push(Problem { at: Some(at), code: "unknown_key", reason });
    }
}

/// The table under `key`, or each table of the array under `key`.
pub(super) fn tables_under<'t, 'i>(table: &'t mut DeTable<'i>, key: &str) -> Vec<&'t mut DeTable<'i>> {
    match table.get_mut(key).map(|v| v.get_mut()) {
        Some(DeValue::Table(t)) => vec![t],
        Some(DeValue::Array(items)) => items
            .iter_mut()
            .filter_map(|v| match v.get_mut() {
                DeValue::Table(t) => Some(t),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Deserializes `root` as `T`, each value that fails taken out and reported until the rest
/// deserializes. None only when nothing is left to take out.
pub(super) fn deserialize<T: DeserializeOwned>(
    mut root: Spanned<DeValue<'_>>,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let mut removed: Vec<String> = Vec::new();
    loop {
        let error = match T::deserialize(ValueDeserializer::from(root.clone())) {
            Ok(value) => return Some(value),
            Err(e) => e,
        };
        let message = error.message().to_string();
        let span = error.span();
        // A required key taken out for its value: its absence is that same problem.
        let echo = removed.iter().any(|k| message == format!("missing field `{k}`"));
        if !echo {
            let code = if message.starts_with("missing field") { "missing_key" } else { "invalid_value" };
            problems.push(Problem { at: span.as_ref().map(|s| s.start), code, reason: message });
        }
        let span = span?;
        match take_out(root.get_mut(), &span) {
            Some(key) => removed.push(key),
            None => return None,
        }
    }
}

/// Takes out of `value` the innermost key (or table of an array of tables) whose span holds
/// `span`; returns its key, or None when `value` holds no such part. A `[section]`'s span is its
/// header alone, so tables are searched by their contents, not by their spans.
fn take_out(value: &mut DeValue<'_>, span: &Range<usize>) -> Option<String> {
    let holds = |s: Range<usize>| s.start <= span.start && span.end <= s.end;
    let nested = |v: &DeValue<'_>| match v {
        DeValue::Table(_) => true,
        DeValue::Array(items) => items.iter().all(|i| i.get_ref().is_table()),
        _ => false,
    };
    match value {
        DeValue::Table(table) => {
            let keys: Vec<(String, Range<usize>)> = table.keys().map(|k| (k.get_ref().to_string(), k.span())).collect();
            for (key, key_span) in keys {
                let child = table.get_mut(key.as_str())?;
                if nested(child.get_ref())
                    && let Some(inner) = take_out(child.get_mut(), span)
                {
                    return Some(inner);
                }
                if holds(key_span) || holds(child.span()) {
                    table.remove(key.as_str());
                    return Some(key);
                }
            }
            None
        }
        // Only arrays of tables lose an element: a scalar array loses its whole key.
        DeValue::Array(items) => {
            let mut found = None;
            for (i, item) in items.as_mut().iter_mut().enumerate() {
                if let Some(inner) = take_out(item.get_mut(), span) {
                    return Some(inner);
                }
                if holds(item.span()) {
                    found = Some(i);
                    break;
                }
            }
            let i = found?;
            // DeArray has no `remove`: rebuild it without the element.
            let mut kept = DeArray::new();
            for (j, item) in items.iter().enumerate() {
                if j != i {
                    kept.push(item.clone());
                }
            }
            *items = kept;
            Some(String::new())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_you_mean_within_two_edits() {
        let known = ["upstream", "upstream_port", "listen", "mode"];
        assert_eq!(did_you_mean("upstrem_port", &known), Some("upstream_port"));
        assert_eq!(did_you_mean("mdoe", &known), Some("mode"));
        assert_eq!(did_you_mean("colour", &known), None);
    }

    #[test]
    fn keys_come_from_the_struct() {
        let keys = keys_of::<super::super::sections::RulesConfig>();
        assert!(keys.contains(&"no_sni") && keys.contains(&"list") && !keys.contains(&"lists"), "{keys:?}");
    }
}

//! What a ruleset is made of, to say which one runs and what a reload changed: a SHA-256 over
//! every rule file and list read (the `snigate_rules_info` metric's label), and each rule
//! file's rules as written (comments and spacing aside), to log the rules a reload added and
//! removed, file by file.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use ring::digest::{Context, SHA256};

use super::file::{PRESET, rule_files, written};

/// A rule file with more rules than this is not remembered here at all, so that a large
/// generated file costs nothing beyond its compiled snapshot: its reloads are told by counts,
/// from the two snapshots' own hashes of their rules.
const TEXTS_UP_TO: usize = 10_000;

/// A ruleset's identity and its rule files' rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fingerprint {
    /// SHA-256 of every file read, with its name, in order, as lowercase hex.
    pub sha256: String,
    /// Each rule file's rules.
    pub rules: BTreeMap<String, Written>,
    /// The settings the snapshot is compiled with besides the files (`[rules]`: the default,
    /// `no_sni`, the lists' actions): with `sha256`, what makes two snapshots the same.
    pub settings: String,
}

/// A rule file's rules as written (comments and spacing aside).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Their texts: a file of at most [`TEXTS_UP_TO`] rules.
    Texts(BTreeSet<String>),
    /// A larger file: its snapshot's hashes of its rules stand for it.
    Large,
}

impl Written {
    fn of(text: &str) -> Written {
        match text.lines().nth(TEXTS_UP_TO) {
            None => Written::Texts(text.lines().map(written).filter(|l| !l.is_empty()).collect()),
            Some(_) => Written::Large,
        }
    }
}

/// What one reload changed in one rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    /// The rule file.
    pub file: String,
    /// Rules it holds now and did not (their texts: empty when the file is told by counts).
    pub added: Vec<String>,
    /// Rules it held and does not now (likewise).
    pub removed: Vec<String>,
    /// How many rules were added and removed.
    pub counts: (usize, usize),
}

impl Fingerprint {
    /// The fingerprint of the rule files (or directories; `None`: the embedded preset) and the
    /// lists, as they are on disk now. A file that cannot be read counts as empty: the load
    /// itself reports it.
    pub fn of(files: Option<&[PathBuf]>, lists: &[&Path]) -> Fingerprint {
        let mut digest = Context::new(&SHA256);
        let mut rules = BTreeMap::new();
        let mut add = |name: &str, text: &[u8]| {
            digest.update(name.as_bytes());
            digest.update(&[0]);
            digest.update(&(text.len() as u64).to_be_bytes());
            digest.update(text);
        };
        let mut rule_file = |name: String, text: &str| {
            add(&name, text.as_bytes());
            rules.insert(name, Written::of(text));
        };
        match files {
            None => PRESET.iter().for_each(|(name, text)| rule_file(name.to_string(), text)),
            Some(paths) => {
                for path in rule_files(paths, &mut Vec::new()) {
                    rule_file(path.display().to_string(), &std::fs::read_to_string(&path).unwrap_or_default());
                }
            }
        }
        for list in lists {
            let mut text = Vec::new();
            let _ = std::fs::File::open(list).and_then(|mut f| f.read_to_end(&mut text));
            add(&list.display().to_string(), &text);
        }
        let sha256 = digest.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect();
        Fingerprint { sha256, rules, settings: String::new() }
    }

    /// This fingerprint, for a snapshot compiled with `settings` (their `Debug` form).
    pub fn with_settings(self, settings: &impl std::fmt::Debug) -> Fingerprint {
        Fingerprint { settings: format!("{settings:?}"), ..self }
    }

    /// Whether a snapshot with this fingerprint would be the one with `other`'s: the same bytes
    /// of every file and the same settings. A reload that finds so keeps the running snapshot
    /// instead of compiling a second copy beside it.
    pub fn same_snapshot(&self, other: &Fingerprint) -> bool {
        self.sha256 == other.sha256 && self.settings == other.settings
    }

    /// What changed from `old` to this one, file by file (files added or removed count whole).
    /// For a file too large to be remembered, `large(file)` gives the sorted, distinct hashes of
    /// its rules now and then, from the snapshots compiled with each.
    pub fn changes_from(&self, old: &Fingerprint, large: impl Fn(&str) -> (Vec<u64>, Vec<u64>)) -> Vec<FileChange> {
        let empty = Written::Texts(BTreeSet::new());
        let files: BTreeSet<&String> = self.rules.keys().chain(old.rules.keys()).collect();
        files
            .into_iter()
            .filter_map(|file| {
                let (now, then) = (self.rules.get(file).unwrap_or(&empty), old.rules.get(file).unwrap_or(&empty));
                let change = match (now, then) {
                    (Written::Texts(now), Written::Texts(then)) => {
                        let added: Vec<String> = now.difference(then).cloned().collect();
                        let removed: Vec<String> = then.difference(now).cloned().collect();
                        let counts = (added.len(), removed.len());
                        FileChange { file: file.clone(), added, removed, counts }
                    }
                    _ => {
                        let (now, then) = large(file);
                        let only = |a: &[u64], b: &[u64]| a.iter().filter(|h| b.binary_search(h).is_err()).count();
                        let counts = (only(&now, &then), only(&then, &now));
                        FileChange { file: file.clone(), added: Vec::new(), removed: Vec::new(), counts }
                    }
                };
                (change.counts != (0, 0)).then_some(change)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_told_file_by_file_and_the_identity_follows_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.rules"), dir.path().join("b.rules"));
        std::fs::write(&a, "allow a.example.com  # first\nallow   b.example.com\n").unwrap();
        let before = Fingerprint::of(Some(&[dir.path().to_path_buf()]), &[]);
        std::fs::write(&a, "allow b.example.com\nallow c.example.com\n").unwrap();
        std::fs::write(&b, "deny d.example.com\n").unwrap();
        let after = Fingerprint::of(Some(&[dir.path().to_path_buf()]), &[]);
        assert_ne!(before.sha256, after.sha256);
        assert_eq!(after.sha256.len(), 64);
        let changes = after.changes_from(&before, |_| unreachable!("small files are remembered"));
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(changes[0].added, ["allow c.example.com"]);
        assert_eq!(changes[0].removed, ["allow a.example.com"]);
        assert_eq!(changes[1].added, ["deny d.example.com"]);
        assert_eq!(Fingerprint::of(Some(&[dir.path().to_path_buf()]), &[]), after, "the same files, the same print");
    }

    #[test]
    fn a_large_file_is_told_by_counts_from_its_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.rules");
        let many: String = (0..=TEXTS_UP_TO).map(|i| format!("deny n{i}.example.com\n")).collect();
        std::fs::write(&a, &many).unwrap();
        let before = Fingerprint::of(Some(&[dir.path().to_path_buf()]), &[]);
        assert_eq!(before.rules.values().next(), Some(&Written::Large));
        std::fs::write(&a, many + "allow a.example.com\n").unwrap();
        let after = Fingerprint::of(Some(&[dir.path().to_path_buf()]), &[]);
        assert_ne!(after.sha256, before.sha256);
        let name = a.display().to_string();
        let changes = after.changes_from(&before, |file| {
            assert_eq!(file, name);
            (vec![1, 2, 3, 4], vec![1, 3, 5])
        });
        assert_eq!((changes.len(), changes[0].counts, changes[0].added.len()), (1, (2, 1), 0), "{changes:?}");
    }
}

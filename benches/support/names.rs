//! Deterministic synthetic domain names (splitmix64) with a blocklist-like spread: the same
//! names on every run and machine, for the matcher and rules-at-scale benches.

/// splitmix64.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// TLDs with a blocklist-like spread (weights in percent).
const TLDS: &[(&str, u64)] = &[
    ("com", 46),
    ("net", 8),
    ("org", 6),
    ("de", 4),
    ("co.uk", 4),
    ("ru", 4),
    ("info", 3),
    ("io", 3),
    ("xyz", 3),
    ("fr", 3),
    ("com.br", 3),
    ("jp", 3),
    ("nl", 2),
    ("top", 2),
    ("in", 2),
    ("cn", 2),
    ("pl", 2),
];

fn label(rng: &mut Rng) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let len = 3 + rng.below(10) as usize;
    let mut s: String = (0..len).map(|_| CHARS[rng.below(26) as usize] as char).collect();
    if len > 6 && rng.below(5) == 0 {
        s.insert(len / 2, '-');
    }
    if rng.below(10) == 0 {
        s.push(CHARS[26 + rng.below(10) as usize] as char);
    }
    s
}

/// A registrable domain plus 0–2 more labels: 2 to 5 labels with the TLD.
pub fn domain(rng: &mut Rng) -> String {
    let mut pick = rng.below(100);
    let mut tld = TLDS[0].0;
    for &(t, w) in TLDS {
        if pick < w {
            tld = t;
            break;
        }
        pick -= w;
    }
    let sub = [0, 0, 1, 1, 1, 2][rng.below(6) as usize];
    let mut parts: Vec<String> = (0..sub).map(|_| label(rng)).collect();
    parts.push(label(rng));
    parts.push(tld.to_string());
    parts.join(".")
}

/// The form a synthetic pattern takes: 50% exact (hosts files), 30% `.name` (adblock, plain
/// lists), 20% `*.name`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Form {
    /// `name`.
    Exact,
    /// `.name`.
    Apex,
    /// `*.name`.
    Below,
}

/// The next synthetic pattern: a domain and its form.
pub fn pattern(rng: &mut Rng) -> (String, Form) {
    let name = domain(rng);
    let form = match rng.below(10) {
        0..=4 => Form::Exact,
        5..=7 => Form::Apex,
        _ => Form::Below,
    };
    (name, form)
}

/// Where Debian's uBlock Origin packages (`webext-ublock-origin-firefox`, `-chromium`) install
/// the EasyList and EasyPrivacy filter lists they bundle.
pub const EASYLIST_DIRS: &[&str] = &[
    "/usr/share/mozilla/extensions/{ec8030f7-c20a-464f-9b0e-13a3a9e97384}/uBlock0@raymondhill.net/assets/thirdparties/easylist",
    "/usr/share/chromium/extensions/ublock-origin/assets/thirdparties/easylist",
];

/// Real blocked domains: every `||domain^` rule of EasyList and EasyPrivacy (with or without
/// options: the domain is what an SNI filter can act on), in file order, without duplicates,
/// and the directory they were read from; `None` when neither package is installed.
pub fn easylist_domains() -> Option<(Vec<String>, &'static str)> {
    let dir = EASYLIST_DIRS.iter().find(|d| std::path::Path::new(d).join("easylist.txt").exists())?;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for file in ["easylist.txt", "easyprivacy.txt"] {
        let text = std::fs::read_to_string(std::path::Path::new(dir).join(file)).unwrap_or_default();
        for line in text.lines() {
            let Some((name, rest)) = line.strip_prefix("||").and_then(|l| l.split_once('^')) else { continue };
            if (rest.is_empty() || rest.starts_with('$')) && is_domain(name) && seen.insert(name.to_string()) {
                out.push(name.to_string());
            }
        }
    }
    Some((out, dir))
}

/// A lowercase DNS name of two labels or more whose last label is not numeric (not an address).
fn is_domain(name: &str) -> bool {
    let labels: Vec<&str> = name.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
        && labels.last().is_some_and(|l| l.as_bytes()[0].is_ascii_lowercase())
}

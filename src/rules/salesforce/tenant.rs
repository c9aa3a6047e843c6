//! The tenant restriction: a rule file that allows one org's hosts and denies the others'.

use std::fmt::Write as _;

use thiserror::Error;

use super::families::{FAMILIES, OPEN_FAMILIES, SHARED_HOSTS, Shape};
use crate::rules::file::ACKNOWLEDGE;

/// Why a tenant cannot be generated.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TenantError {
    /// The My Domain name is not a usable DNS label.
    #[error("invalid My Domain name `{name}`: {why}")]
    MyDomain {
        /// The name as given.
        name: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A sandbox name Salesforce would not accept.
    #[error("invalid sandbox name `{name}`: {why}")]
    Sandbox {
        /// The name as given.
        name: String,
        /// What is wrong.
        why: &'static str,
    },
    /// `--sandbox` with `--developer-edition`: Developer Edition orgs have no sandboxes.
    #[error("a Developer Edition org has no sandboxes: --sandbox and --developer-edition exclude each other")]
    SandboxOfDeveloperEdition,
}

/// Which of the org's sandboxes are allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sandboxes {
    /// Every sandbox: `acme--*` in each family's `sandbox` partition.
    All,
    /// These sandboxes only (validated, lowercase, in the order given, without repeats).
    Only(Vec<String>),
}

/// The org whose hosts a tenant restriction allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// The My Domain name, lowercase (`acme` in `acme.my.salesforce.com`).
    pub my_domain: String,
    /// What kind of org it is, which decides its host formats.
    pub kind: OrgKind,
}

/// Production orgs (with sandboxes) and Developer Edition orgs have different host formats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrgKind {
    /// A production org: `acme.my.salesforce.com`, sandboxes `acme--uat.sandbox.…`.
    Production(Sandboxes),
    /// A Developer Edition org, in the `develop` partition: `acme.develop.my.salesforce.com`.
    DeveloperEdition,
}

/// Longest sandbox name Salesforce accepts (Help, "Create a Sandbox": 10 characters or fewer).
pub const MAX_SANDBOX_NAME: usize = 10;

impl Tenant {
    /// Validates the names: the My Domain name must be a DNS label (letters, digits and `-`,
    /// 1–63 characters, no `-` at either end) without `--`, which separates org and sandbox in
    /// host names; sandbox names are 1–10 letters and digits. Names are lowercased.
    /// `sandboxes` empty means every sandbox.
    pub fn new(my_domain: &str, sandboxes: &[String], developer_edition: bool) -> Result<Tenant, TenantError> {
        let my_domain = validate_my_domain(my_domain)?;
        let kind = if developer_edition {
            if !sandboxes.is_empty() {
                return Err(TenantError::SandboxOfDeveloperEdition);
            }
            OrgKind::DeveloperEdition
        } else if sandboxes.is_empty() {
            OrgKind::Production(Sandboxes::All)
        } else {
            let mut names: Vec<String> = Vec::new();
            for s in sandboxes {
                let s = validate_sandbox(s)?;
                // The longest label generated is `org--sandbox`; DNS caps labels at 63 bytes.
                if my_domain.len() + 2 + s.len() > 63 {
                    return Err(TenantError::Sandbox {
                        name: s,
                        why: "`MYDOMAIN--SANDBOX` would exceed 63 characters",
                    });
                }
                if !names.contains(&s) {
                    names.push(s);
                }
            }
            OrgKind::Production(Sandboxes::Only(names))
        };
        Ok(Tenant { my_domain, kind })
    }
}

fn validate_my_domain(name: &str) -> Result<String, TenantError> {
    let bad = |why| TenantError::MyDomain { name: name.to_string(), why };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > 63 {
        return Err(bad("longer than 63 characters (one DNS label)"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(bad("only letters, digits and `-` are allowed (one DNS label, no dots)"));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(bad("must not start or end with `-`"));
    }
    if name.contains("--") {
        return Err(bad("must not contain `--`, which separates the org from a sandbox or namespace"));
    }
    Ok(name.to_ascii_lowercase())
}

fn validate_sandbox(name: &str) -> Result<String, TenantError> {
    let bad = |why| TenantError::Sandbox { name: name.to_string(), why };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > MAX_SANDBOX_NAME {
        return Err(bad("longer than 10 characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(bad("only letters and digits are allowed"));
    }
    Ok(name.to_ascii_lowercase())
}

/// One line of a generated file.
enum Line {
    /// `# text` (`#` alone when empty).
    Comment(String),
    /// Separates sections.
    Blank,
    /// A rule and its trailing comment.
    Rule {
        /// `allow PATTERN` or `deny  PATTERN`.
        rule: String,
        /// Why the rule is there.
        why: String,
    },
}

/// The tenant-restriction rule file for `tenant`: the shared hosts, then for each family the
/// org's own hosts (allowed) and every other org's (denied). Every rule line is commented.
pub fn tenant_rules(tenant: &Tenant) -> String {
    let org = tenant.my_domain.as_str();
    let mut lines = Vec::new();
    let mut command = format!("snigate salesforce tenant --my-domain {org}");
    match &tenant.kind {
        OrgKind::Production(Sandboxes::All) => {}
        OrgKind::Production(Sandboxes::Only(names)) => {
            for n in names {
                command.push_str(&format!(" --sandbox {n}"));
            }
        }
        OrgKind::DeveloperEdition => command.push_str(" --developer-edition"),
    }
    let allowed = match &tenant.kind {
        OrgKind::Production(Sandboxes::All) => format!("production and every `{org}--*` sandbox"),
        OrgKind::Production(Sandboxes::Only(names)) => {
            let quoted = names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
            format!("production and sandbox{} {quoted}", if names.len() > 1 { "es" } else { "" })
        }
        OrgKind::DeveloperEdition => "the Developer Edition org (develop partition)".to_string(),
    };
    for text in [
        format!("Tenant restriction: reach the Salesforce org `{org}` and no other org, while the"),
        format!("shared login and static hosts keep working. Allowed: {allowed}."),
        format!("Generated by `{command}`."),
        String::new(),
        "The most specific rule wins and deny wins ties: the org's exact names and leftmost-label".to_string(),
        "globs beat the family denies (`deny *.my.salesforce.com`, …), and those denies tie with".to_string(),
        "the allows of rules/salesforce.rules, so they also win when both files are loaded.".to_string(),
        "My Domain names cannot contain `--` (it separates org and sandbox), so no other org's".to_string(),
        format!("hosts match `{org}--*`. Host formats: Salesforce Help, \"My Domain URL Formats\""),
        "(enhanced domains, enforced since Winter '24).".to_string(),
        String::new(),
        "A hello without SNI names no org, and a Salesforce address serves every org: where `allow".to_string(),
        "ip` rules are loaded (`snigate import salesforce-ip-ranges`), set `[rules] no_sni = \"deny\"`".to_string(),
        "so that leaving the name out cannot reach another org.".to_string(),
    ] {
        lines.push(Line::Comment(text));
    }
    // What no rule by name can restrict, so that the file does not seem to promise it.
    for open in OPEN_FAMILIES {
        lines.push(Line::Comment(String::new()));
        lines.push(Line::Comment(format!("Left open to every org, where the preset allows it: *.{}.", open.domain)));
        lines.push(Line::Comment(format!("{}.", open.why)));
    }
    lines.push(Line::Blank);
    lines.push(Line::Comment("Shared hosts every org uses".to_string()));
    for h in SHARED_HOSTS {
        // Beside the preset, which allows them too, these repeat it on purpose.
        let why = format!("{}; {ACKNOWLEDGE}duplicate)", h.why);
        lines.push(Line::Rule { rule: format!("allow {}", h.pattern), why });
    }
    for f in FAMILIES {
        lines.push(Line::Blank);
        lines.push(Line::Comment(f.title.to_string()));
        for p in f.parents {
            lines.extend(family_allows(org, &tenant.kind, f.shape, p));
        }
        lines.push(Line::Rule {
            rule: format!("deny  *.{}", f.domain),
            // Beside the preset, this deny overrules its allow of the family on purpose.
            why: format!("every other org, sandbox and partition; {ACKNOWLEDGE}shadowed)"),
        });
    }
    render(&lines)
}

/// The allows for `org`'s hosts of one shape directly below `parent`.
fn family_allows(org: &str, kind: &OrgKind, shape: Shape, parent: &str) -> Vec<Line> {
    let rule = |rule: String, why: String| Line::Rule { rule: format!("allow {rule}"), why };
    let (own, x) = match shape {
        Shape::Org => (org.to_string(), ""),
        Shape::Suffixed => (format!("{org}--*"), "--*"),
        Shape::Content => (format!("{org}--c"), "--c"),
    };
    // The content domain has no partition label: sandboxes differ by their first label only.
    let sandbox = if shape == Shape::Content { "" } else { "sandbox." };
    let production = match shape {
        Shape::Suffixed => "production: every package namespace or unique ID",
        _ => "production",
    };
    match kind {
        OrgKind::Production(sandboxes) => {
            let mut out = vec![rule(format!("{own}.{parent}"), production.to_string())];
            match sandboxes {
                Sandboxes::All => {
                    let all = if shape == Shape::Content { format!("{org}--*--c") } else { format!("{org}--*") };
                    out.push(rule(format!("{all}.{sandbox}{parent}"), format!("every {org} sandbox")));
                }
                Sandboxes::Only(names) => {
                    for n in names {
                        out.push(rule(format!("{org}--{n}{x}.{sandbox}{parent}"), format!("sandbox {n}")));
                    }
                }
            }
            out
        }
        OrgKind::DeveloperEdition => {
            let develop = if shape == Shape::Content { "" } else { "develop." };
            vec![rule(format!("{own}.{develop}{parent}"), "Developer Edition (develop partition)".to_string())]
        }
    }
}

/// Writes the lines, with rule comments aligned in one column.
fn render(lines: &[Line]) -> String {
    let width =
        lines.iter().filter_map(|l| if let Line::Rule { rule, .. } = l { Some(rule.len()) } else { None }).max();
    let width = width.unwrap_or(0);
    let mut out = String::new();
    for l in lines {
        match l {
            Line::Comment(text) if text.is_empty() => out.push_str("#\n"),
            Line::Comment(text) => {
                let _ = writeln!(out, "# {text}");
            }
            Line::Blank => out.push('\n'),
            Line::Rule { rule, why } => {
                let _ = writeln!(out, "{rule:<width$} # {why}");
            }
        }
    }
    out
}

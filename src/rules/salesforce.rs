//! The Salesforce toolkit: rule files generated from Salesforce's own data.
//!
//! - [`import_ip_ranges`]: Salesforce's published `ip-ranges.json` (Hyperforce) becomes `ip`
//!   rules, filtered by region and direction, with adjacent and contained prefixes merged.
//! - [`tenant_rules`]: a tenant-restriction rule file for one org, built from [`FAMILIES`] (the
//!   hostname families every org has) and [`SHARED_HOSTS`] (the hosts every org uses).
//!
//! Both are pure: text in, rule-file text (or an error naming the problem) out. The command
//! line (`snigate import salesforce-ip-ranges`, `snigate salesforce tenant`) writes the result.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::str::FromStr;

use ipnet::IpNet;
use serde::Deserialize;
use thiserror::Error;

use super::file::parse_cidr;
use super::rule::Verdict;

/// One hostname family Salesforce serves for each org, with enhanced domains (enforced since
/// Winter '24). Source: Salesforce Help, "My Domain URL Formats", "My Domain Login and
/// Application URL Formats with Enhanced Domains", "Partitioned Domains for Scratch Orgs";
/// Metadata API `MyDomainSettings` and Tooling API `OrgDomainLog.DomainPartition` for the
/// partitions (`sandbox`, `develop`, …).
///
/// For My Domain `acme` and sandbox `uat`, the hosts of a family sit directly below each of its
/// [`parents`](Family::parents) `P`, shaped as its [`Shape`] says: for [`Shape::Org`],
/// `acme.P` (production), `acme--uat.sandbox.P` (sandbox) and `acme.develop.P` (Developer
/// Edition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    /// What the family serves: the heading of its section in generated files.
    pub title: &'static str,
    /// The domain the preset allows everything below (`allow *.DOMAIN`) and a tenant
    /// restriction denies for every other org.
    pub domain: &'static str,
    /// The domains an org's hosts sit directly below: `domain` itself, or subdomains of it
    /// (user content is under `my.` and `file.force-user-content.com`).
    pub parents: &'static [&'static str],
    /// How the org's name makes the leftmost label.
    pub shape: Shape,
}

/// How an org's hosts are named in a family, for My Domain `acme` and sandbox `uat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `acme.P`, `acme--uat.sandbox.P`, `acme.develop.P`.
    Org,
    /// `acme--X.P`, `acme--uat--X.sandbox.P`, `acme--X.develop.P`: `X` is a package namespace
    /// (`acme--c.vf.force.com`) or a unique ID, so even production is a leftmost-label glob
    /// (`acme--*`) rather than an exact name.
    Suffixed,
    /// `acme--c.P` and `acme--uat--c.P`: the content domain of orgs without enhanced domains,
    /// which has no partition label (`acme-dev-ed--c.documentforce.com` for Developer Edition).
    Content,
}

/// The org-specific families, in the order generated files list them. `rules/salesforce.rules`
/// allows `*.DOMAIN` for each of them (a test checks it), and a tenant restriction denies
/// `*.DOMAIN` for every org but one.
pub const FAMILIES: &[Family] = &[
    Family {
        title: "My Domain login, UI and API",
        domain: "my.salesforce.com",
        parents: &["my.salesforce.com"],
        shape: Shape::Org,
    },
    Family {
        title: "Lightning Experience",
        domain: "lightning.force.com",
        parents: &["lightning.force.com"],
        shape: Shape::Org,
    },
    Family {
        title: "Visualforce (hosts are `<org>--<namespace>`, for example acme--c)",
        domain: "vf.force.com",
        parents: &["vf.force.com"],
        shape: Shape::Suffixed,
    },
    Family { title: "Experience Cloud sites", domain: "my.site.com", parents: &["my.site.com"], shape: Shape::Org },
    Family {
        title: "Salesforce Sites",
        domain: "my.salesforce-sites.com",
        parents: &["my.salesforce-sites.com"],
        shape: Shape::Org,
    },
    Family { title: "Content files", domain: "file.force.com", parents: &["file.force.com"], shape: Shape::Org },
    Family {
        title: "Setup",
        domain: "my.salesforce-setup.com",
        parents: &["my.salesforce-setup.com"],
        shape: Shape::Org,
    },
    Family {
        title: "Enhanced Chat, voice and messaging (Service Cloud real-time)",
        domain: "my.salesforce-scrt.com",
        parents: &["my.salesforce-scrt.com"],
        shape: Shape::Org,
    },
    Family {
        title: "User content and user images (hosts are `<org>--<unique ID>`)",
        domain: "force-user-content.com",
        parents: &["my.force-user-content.com", "file.force-user-content.com"],
        shape: Shape::Suffixed,
    },
    Family {
        title: "Salesforce CRM Content of orgs without enhanced domains (hosts are `<org>--c`)",
        domain: "documentforce.com",
        parents: &["documentforce.com"],
        shape: Shape::Content,
    },
];

/// A family of the preset whose host names do not carry the org's name, so that no rule by
/// name can keep other orgs out of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFamily {
    /// The domain the preset allows everything below.
    pub domain: &'static str,
    /// Why it cannot be restricted by org: what its host names carry instead.
    pub why: &'static str,
}

/// The preset's families that a tenant restriction leaves open to every org. `snigate check`
/// names them when a rule set both restricts orgs and allows one of these.
pub const OPEN_FAMILIES: &[OpenFamily] = &[OpenFamily {
    domain: "salesforceliveagent.com",
    why: "Chat (Live Agent) hosts name a pod, not an org (d.la1-c1-frf.salesforceliveagent.com)",
}];

/// A host (or suffix pattern) that every org uses, whichever tenant it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedHost {
    /// The rule pattern.
    pub pattern: &'static str,
    /// Why an org needs it: the line's comment in generated files.
    pub why: &'static str,
}

/// The shared hosts a tenant restriction keeps allowed. Source: Salesforce Help, "Set the My
/// Domain Login Policy" (login, test, welcome) and "Allow the Required Domains" (static content).
pub const SHARED_HOSTS: &[SharedHost] = &[
    SharedHost { pattern: "login.salesforce.com", why: "production login page and OAuth/SOAP login endpoint" },
    SharedHost { pattern: "test.salesforce.com", why: "sandbox login page and OAuth endpoint" },
    SharedHost { pattern: "welcome.salesforce.com", why: "alternative production login page" },
    SharedHost { pattern: "*.sfdcstatic.com", why: "static resources and Lightning framework files (CDN)" },
];

// ---------------------------------------------------------------------------------------------
// ip-ranges.json

/// The document at `https://ip-ranges.salesforce.com/ip-ranges.json`. Unknown fields (such as
/// `syncToken`) are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct IpRanges {
    /// When Salesforce generated the file, as written there (stated in the output's header).
    #[serde(rename = "createDate", default)]
    pub create_date: Option<String>,
    /// The IPv4 entries (required).
    pub prefixes: Vec<PrefixEntry>,
    /// The IPv6 entries, present in some versions of the file, with their CIDRs in
    /// `ipv6_prefix` (the AWS-style name) or `ip_prefix`.
    #[serde(default)]
    pub ipv6_prefixes: Vec<PrefixEntry>,
}

/// One entry of `prefixes[]` or `ipv6_prefixes[]`.
#[derive(Debug, Clone, Deserialize)]
pub struct PrefixEntry {
    /// The CIDRs: one string or a list of strings (both forms have been published).
    #[serde(alias = "ipv6_prefix")]
    pub ip_prefix: OneOrMany,
    /// The cloud region (`us-east-1`, `eu-central-1`, …); filtered on with `--region`.
    #[serde(default)]
    pub region: Option<String>,
    /// The cloud provider (`aws`, `gcp`, …); reported, not filtered on.
    #[serde(default)]
    pub provider: Option<String>,
    /// `inbound` (clients reaching Hyperforce) or `outbound` (Hyperforce reaching customers).
    #[serde(default)]
    pub direction: Option<String>,
}

/// A CIDR field written as one string or as a list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// `"13.108.0.0/14"`.
    One(String),
    /// `["13.108.0.0/14", "155.226.128.0/21"]`.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The CIDR strings, in file order.
    pub fn as_slice(&self) -> &[String] {
        match self {
            OneOrMany::One(s) => std::slice::from_ref(s),
            OneOrMany::Many(v) => v,
        }
    }
}

/// The `direction` of an entry: which way connections using these addresses go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Addresses clients connect to: what an egress filter allows.
    Inbound,
    /// Addresses Hyperforce connects from (callouts, outbound messages).
    Outbound,
}

impl Direction {
    /// The spelling in the file and on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

impl FromStr for Direction {
    type Err = String;

    fn from_str(s: &str) -> Result<Direction, String> {
        match s {
            "inbound" => Ok(Direction::Inbound),
            "outbound" => Ok(Direction::Outbound),
            _ => Err(format!("`{s}`: expected inbound or outbound")),
        }
    }
}

/// What to keep from the file, and how to write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOptions {
    /// Keep entries of these regions only (compared ASCII case-insensitively); empty keeps all.
    pub regions: Vec<String>,
    /// Keep entries of this direction only; `None` keeps both.
    pub direction: Option<Direction>,
    /// The action of every generated rule.
    pub action: Verdict,
}

impl Default for ImportOptions {
    fn default() -> ImportOptions {
        ImportOptions { regions: Vec::new(), direction: None, action: Verdict::Allow }
    }
}

/// Why an ip-ranges file cannot be converted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ImportError {
    /// Not JSON, or not the documented shape (a missing `prefixes`, a wrong type).
    #[error("{file}:{line}:{column}: {message}")]
    Json {
        /// The file, as named by the caller.
        file: String,
        /// 1-based line of the problem (serde_json's position).
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A prefix that is not a CIDR, or has host bits set.
    #[error("{file}:{location}{field}: bad CIDR `{text}`: {why}")]
    Cidr {
        /// The file, as named by the caller.
        file: String,
        /// `LINE:COLUMN: ` where the string was found in the text, or empty.
        location: String,
        /// The JSON path of the value, e.g. `prefixes[3].ip_prefix[1]`.
        field: String,
        /// The value as written.
        text: String,
        /// Why it is rejected.
        why: String,
    },
    /// A `--region` that no entry of the file has: probably a typo, and an empty rule file
    /// would silently allow nothing.
    #[error("{file}: no entry has region `{region}` (the file's regions: {known})")]
    UnknownRegion {
        /// The file, as named by the caller.
        file: String,
        /// The region asked for.
        region: String,
        /// The regions the file has, comma-separated.
        known: String,
    },
}

impl ImportError {
    /// Whether the error is in the file (exit 1) rather than in the arguments (exit 64).
    pub fn is_invalid_input(&self) -> bool {
        !matches!(self, ImportError::UnknownRegion { .. })
    }
}

/// The result of [`import_ip_ranges`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The rule file: a header comment, then one `ACTION ip CIDR` line per merged prefix.
    pub text: String,
    /// Entries kept by the filters, of all entries in the file.
    pub entries: (usize, usize),
    /// IPv4 and IPv6 prefixes in the kept entries, before merging.
    pub prefixes: (usize, usize),
    /// Rules written (prefixes after merging).
    pub rules: usize,
}

/// One entry of either list, as the filters see it.
struct Entry<'a> {
    /// `prefixes` or `ipv6_prefixes`, for error paths.
    list: &'static str,
    /// The CIDR field's canonical name, for error paths.
    field: &'static str,
    /// Position in its list, for error paths.
    index: usize,
    /// The CIDRs as written.
    cidrs: &'a OneOrMany,
    /// Matched against `--region`.
    region: Option<&'a str>,
    /// Matched against `--direction`.
    direction: Option<&'a str>,
}

/// Converts the text of an ip-ranges file into `ip` rules. `file` names it in errors; `source`
/// is what the header calls it (a file name, not a path, so the output does not depend on where
/// the command ran).
pub fn import_ip_ranges(file: &str, source: &str, text: &str, opts: &ImportOptions) -> Result<Imported, ImportError> {
    // serde accepts a struct written as an array of its fields; the file is an object.
    let start = text.len() - text.trim_start().len();
    if text[start..].starts_with('[') {
        let (line, column) = position_of(text, start);
        let message = "expected a JSON object at the top level, found an array".to_string();
        return Err(ImportError::Json { file: file.to_string(), line, column, message });
    }
    let doc: IpRanges = serde_json::from_str(text).map_err(|e| json_error(file, &e))?;
    let entries: Vec<Entry<'_>> =
        [("prefixes", "ip_prefix", &doc.prefixes), ("ipv6_prefixes", "ipv6_prefix", &doc.ipv6_prefixes)]
            .into_iter()
            .flat_map(|(list, field, entries)| {
                entries.iter().enumerate().map(move |(index, p)| Entry {
                    list,
                    field,
                    index,
                    cidrs: &p.ip_prefix,
                    region: p.region.as_deref(),
                    direction: p.direction.as_deref(),
                })
            })
            .collect();

    // Every CIDR of the file is checked, kept or not: a broken file is broken whatever the filter.
    let mut parsed = Vec::with_capacity(entries.len());
    for e in &entries {
        let mut nets = Vec::new();
        for (i, cidr) in e.cidrs.as_slice().iter().enumerate() {
            let net = parse_cidr(cidr.trim()).map_err(|kind| {
                let why = match kind {
                    super::file::RuleErrorKind::Cidr { why, .. } => why,
                    other => other.to_string(),
                };
                let field = match e.cidrs {
                    OneOrMany::One(_) => format!("{}[{}].{}", e.list, e.index, e.field),
                    OneOrMany::Many(_) => format!("{}[{}].{}[{i}]", e.list, e.index, e.field),
                };
                let location = position_of_string(text, cidr).map(|(l, c)| format!("{l}:{c}: ")).unwrap_or_default();
                ImportError::Cidr { file: file.to_string(), location, field, text: cidr.clone(), why }
            })?;
            nets.push(net);
        }
        parsed.push(nets);
    }

    let known: BTreeSet<String> = entries.iter().filter_map(|e| e.region.map(str::to_ascii_lowercase)).collect();
    let mut wanted: Vec<String> = Vec::new();
    for r in &opts.regions {
        let r = r.to_ascii_lowercase();
        if !wanted.contains(&r) {
            wanted.push(r);
        }
    }
    if let Some(missing) = wanted.iter().find(|r| !known.contains(*r)) {
        return Err(ImportError::UnknownRegion {
            file: file.to_string(),
            region: missing.clone(),
            known: if known.is_empty() { "none".to_string() } else { known.into_iter().collect::<Vec<_>>().join(", ") },
        });
    }

    let keep = |e: &Entry<'_>| {
        let region_ok = wanted.is_empty() || e.region.is_some_and(|r| wanted.contains(&r.to_ascii_lowercase()));
        let direction_ok =
            opts.direction.is_none_or(|d| e.direction.is_some_and(|x| x.eq_ignore_ascii_case(d.as_str())));
        region_ok && direction_ok
    };
    let mut nets = Vec::new();
    let mut kept = 0;
    for (e, n) in entries.iter().zip(&parsed) {
        if keep(e) {
            kept += 1;
            nets.extend_from_slice(n);
        }
    }
    let v4 = nets.iter().filter(|n| matches!(n, IpNet::V4(_))).count();
    let v6 = nets.len() - v4;
    let mut merged = IpNet::aggregate(&nets);
    merged.sort();

    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Salesforce Hyperforce IP ranges as `ip` rules: `{}` connections without SNI to these",
        opts.action
    );
    let _ =
        writeln!(out, "# destinations. Generated by `snigate import salesforce-ip-ranges`; do not edit, re-import.");
    let _ = writeln!(out, "# source:     {source} (createDate {})", doc.create_date.as_deref().unwrap_or("absent"));
    let regions = if wanted.is_empty() { "all".to_string() } else { wanted.join(", ") };
    let direction = opts.direction.map_or("all", Direction::as_str);
    let _ = writeln!(out, "# filters:    region {regions}; direction {direction}");
    let _ = writeln!(
        out,
        "# counts:     {kept} of {} entries; {v4} IPv4 and {v6} IPv6 prefixes; {} rules after merging adjacent and contained prefixes",
        entries.len(),
        merged.len()
    );
    for net in &merged {
        let _ = writeln!(out, "{} ip {net}", opts.action);
    }
    Ok(Imported { text: out, entries: (kept, entries.len()), prefixes: (v4, v6), rules: merged.len() })
}

/// serde_json's message and position, in the `file:line:column: message` form of rule errors.
fn json_error(file: &str, e: &serde_json::Error) -> ImportError {
    let full = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    let message = full.strip_suffix(&position).unwrap_or(&full);
    // The untagged string-or-list field is the only untagged enum: say what it accepts.
    let message = if message.starts_with("data did not match any variant of untagged enum OneOrMany") {
        "`ip_prefix`/`ipv6_prefix` must be a CIDR string or a list of CIDR strings".to_string()
    } else {
        message.to_string()
    };
    ImportError::Json { file: file.to_string(), line: e.line(), column: e.column(), message }
}

/// 1-based line and column (in characters) of the first JSON string literal equal to `value`.
fn position_of_string(text: &str, value: &str) -> Option<(usize, usize)> {
    text.find(&format!("\"{value}\"")).map(|at| position_of(text, at))
}

/// 1-based line and column (in characters) of byte offset `at`.
fn position_of(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or(before).chars().count() + 1;
    (line, column)
}

// ---------------------------------------------------------------------------------------------
// Tenant restriction

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
        lines.push(Line::Rule { rule: format!("allow {}", h.pattern), why: h.why.to_string() });
    }
    for f in FAMILIES {
        lines.push(Line::Blank);
        lines.push(Line::Comment(f.title.to_string()));
        for p in f.parents {
            lines.extend(family_allows(org, &tenant.kind, f.shape, p));
        }
        lines.push(Line::Rule {
            rule: format!("deny  *.{}", f.domain),
            why: "every other org, sandbox and partition".to_string(),
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

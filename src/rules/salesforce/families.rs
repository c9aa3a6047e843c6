//! The hostname families Salesforce serves per org, those it shares, and the hosts every org
//! uses: what the tenant restriction and `snigate check` are built from.

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

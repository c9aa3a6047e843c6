//! The Salesforce toolkit: rule files generated from Salesforce's own data.
//!
//! - [`import_ip_ranges`]: Salesforce's published `ip-ranges.json` (Hyperforce) becomes `ip`
//!   rules, filtered by region and direction, with adjacent and contained prefixes merged.
//! - [`tenant_rules`]: a tenant-restriction rule file for one org, built from [`FAMILIES`] (the
//!   hostname families every org has) and [`SHARED_HOSTS`] (the hosts every org uses).
//!
//! Both are pure: text in, rule-file text (or an error naming the problem) out. The command
//! line (`snigate import salesforce-ip-ranges`, `snigate salesforce tenant`) writes the result.

mod families;
mod import;
mod tenant;

pub use families::*;
pub use import::*;
pub use tenant::*;

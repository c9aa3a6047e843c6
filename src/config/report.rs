//! Report scopes: where a connection the policy would deny is let through and reported
//! instead (`enforce = "report"` on a listener, `[[report]]` for sources), until a date.

use crate::date::{civil_from_days, days_from_civil};
use std::fmt;

use ipnet::IpNet;
use serde::Deserialize;

use super::keyword::Keyword;

/// Whether a listener enforces its policy or reports what it would deny.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnforceKeyword {
    /// Deny what the policy denies (the default).
    #[default]
    Enforce,
    /// Let through what the policy would deny, and report it.
    Report,
}

keywords!(EnforceKeyword { Enforce => "enforce", Report => "report" });

/// A listener's `enforce` with the setting that belongs to report alone: a date on an
/// enforcing listener cannot be written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Enforce {
    /// Deny what the policy denies.
    #[default]
    Enforce,
    /// Report what the policy would deny, until `until` when there is one.
    Report {
        /// `report_until`: from the next day (UTC) on, the listener enforces.
        until: Option<Until>,
    },
}

/// A report scope's last day: it reports through that day (UTC) and enforces from the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Until {
    /// The last day, as days since 1970-01-01.
    day: i64,
}

impl Until {
    /// Parses `YYYY-MM-DD`.
    pub fn parse(text: &str) -> Result<Until, String> {
        let bad = || format!("{text:?} is not a date (YYYY-MM-DD)");
        let parts: Vec<&str> = text.split('-').collect();
        let [y, m, d] = parts[..] else { return Err(bad()) };
        if y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return Err(bad());
        }
        let (y, m, d): (i64, u32, u32) =
            (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?, d.parse().map_err(|_| bad())?);
        let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
        let days_in = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        if !(1..=12).contains(&m) || d == 0 || d > days_in[m as usize - 1] {
            return Err(bad());
        }
        Ok(Until { day: days_from_civil(y, m, d) })
    }

    /// The unix time the scope ends at: midnight UTC after its last day.
    pub fn ends_at(self) -> i64 {
        (self.day + 1) * 86_400
    }
}

impl fmt::Display for Until {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = civil_from_days(self.day);
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

/// One `[[report]]` table: sources whose connections every listener reports, until a date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportScope {
    /// The sources.
    pub from: Vec<IpNet>,
    /// The last day it reports.
    pub until: Until,
}

impl ReportScope {
    /// The `scope` label of `snigate_report_until_timestamp_seconds`: `report:` and the
    /// networks, comma-separated.
    pub fn label(&self) -> String {
        let nets: Vec<String> = self.from.iter().map(|n| n.to_string()).collect();
        format!("report:{}", nets.join(","))
    }
}

/// A `[[report]]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReportFile {
    #[serde(default)]
    from: Vec<IpNet>,
    until: Option<String>,
}

impl ReportFile {
    /// The scope, or what is wrong with it.
    pub(super) fn resolve(self) -> Result<ReportScope, String> {
        if self.from.is_empty() {
            return Err("[[report]] needs `from`: the sources it reports for".into());
        }
        let until = self.until.ok_or("[[report]] needs `until` (YYYY-MM-DD): a source scope cannot report forever")?;
        let until = Until::parse(&until).map_err(|e| format!("[[report]] until: {e}"))?;
        Ok(ReportScope { from: self.from, until })
    }
}

/// A listener's `enforce` and `report_until` as written, resolved.
pub(super) fn enforce(keyword: EnforceKeyword, until: Option<&str>) -> Result<Enforce, String> {
    let until = until.map(|u| Until::parse(u).map_err(|e| format!("report_until: {e}"))).transpose()?;
    match (keyword, until) {
        (EnforceKeyword::Enforce, Some(_)) => Err("`report_until` is only used with enforce = \"report\"".into()),
        (EnforceKeyword::Enforce, None) => Ok(Enforce::Enforce),
        (EnforceKeyword::Report, until) => Ok(Enforce::Report { until }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_end_at_the_next_midnight_utc() {
        assert_eq!(Until::parse("1970-01-01").unwrap().ends_at(), 86_400);
        assert_eq!(Until::parse("2024-02-29").unwrap().ends_at(), 1_709_251_200);
        assert_eq!(Until::parse("2027-01-31").unwrap().to_string(), "2027-01-31");
        for bad in ["2023-02-29", "2027-13-01", "2027-1-31", "tomorrow", "2027-01-32", "2027-01-31-"] {
            assert!(Until::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn report_until_needs_report() {
        assert!(enforce(EnforceKeyword::Enforce, Some("2027-01-31")).is_err());
        let until = Some(Until::parse("2027-01-31").unwrap());
        assert_eq!(enforce(EnforceKeyword::Report, Some("2027-01-31")), Ok(Enforce::Report { until }));
    }
}

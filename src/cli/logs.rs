//! Recorded access logs, as `replay` and `learn` read them: JSON lines as snigate writes them,
//! from files or standard input (`-`), gzip recognised by its magic bytes (a rotated
//! `access.log.1.gz`), streamed line by line, so that memory never follows a log's length. A
//! line that cannot be read is counted and skipped, never fatal.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use std::collections::HashMap;

use ipnet::IpNet;
use serde::Deserialize;

use crate::config::{Config, ModeConfig, Until};
use crate::name::Name;
use crate::proxy::report::Scopes;

/// How a recorded connection was decided by the policy of its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Recorded {
    /// The policy allowed it (whether the upstream then answered or not).
    Allowed,
    /// The policy denied it, or would have (a report scope let it through).
    Denied,
    /// Denied for a reason no rule changes (the destination guard, limits, a malformed hello,
    /// ECH, a destination that did not match its name).
    Unreplayable,
}

/// One recorded connection, as far as the rules see it.
#[derive(Debug)]
pub(super) struct Connection<'a> {
    /// How the policy of its time decided it.
    pub recorded: Recorded,
    /// The listener's name.
    pub listener: Option<Cow<'a, str>>,
    /// When it was accepted, in unix seconds.
    pub time: Option<i64>,
    /// The name the rules saw: the SNI, or an explicit request's host.
    pub name: Option<Name>,
    /// The client's address.
    pub client: IpAddr,
    /// The destination the rules saw: the original one, or for a connection without a name the
    /// address it went to.
    pub dst: Option<SocketAddr>,
    /// The destination port the rules matched.
    pub port: u16,
    /// What it spoke (`tls`, `http`, `quic`, `other`).
    pub protocol: Protocol,
}

/// What a connection spoke, as the log's `protocol` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    /// A TLS hello, over TCP or QUIC.
    Tls,
    /// An HTTP request (a CONNECT or a plain request).
    Http,
    /// Anything else: decided by the destination alone.
    Other,
}

/// The fields of a log line that the rules saw; the others are skipped unread.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    time: Option<Cow<'a, str>>,
    #[serde(borrow)]
    listener: Option<Cow<'a, str>>,
    #[serde(borrow)]
    client: Option<Cow<'a, str>>,
    #[serde(borrow)]
    original_dst: Option<Cow<'a, str>>,
    #[serde(borrow)]
    sni: Option<Cow<'a, str>>,
    #[serde(borrow)]
    host: Option<Cow<'a, str>>,
    #[serde(borrow)]
    upstream: Option<Cow<'a, str>>,
    #[serde(borrow)]
    protocol: Option<Cow<'a, str>>,
    #[serde(borrow)]
    verdict: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reason: Option<Cow<'a, str>>,
    #[serde(borrow)]
    would_reason: Option<Cow<'a, str>>,
}

/// The reasons of a denial that a rule change can turn into an allow, and of a report.
fn by_rules(reason: &str) -> bool {
    matches!(reason, "rule" | "default" | "no_sni" | "unknown_protocol")
}

/// Reads one access-log line: `None` for a line that is not a connection's (an event line),
/// `Err` for one that cannot be read.
pub(super) fn connection(line: &str) -> Result<Option<Connection<'_>>, ()> {
    let v: Line = serde_json::from_str(line).map_err(drop)?;
    let Some(verdict) = v.verdict.as_deref() else { return Ok(None) };
    let reason = v.reason.as_deref().ok_or(())?;
    let recorded = match (verdict, reason) {
        ("allow", "report") if v.would_reason.as_deref().is_none_or(by_rules) => Recorded::Denied,
        ("allow", "report") => Recorded::Unreplayable,
        ("allow" | "error", _) => Recorded::Allowed,
        ("deny", r) if by_rules(r) => Recorded::Denied,
        ("deny", _) => Recorded::Unreplayable,
        _ => return Err(()),
    };
    let client: SocketAddr = v.client.as_deref().and_then(|c| c.parse().ok()).ok_or(())?;
    let addr = |a: &Option<Cow<str>>| a.as_deref().and_then(|a| a.parse::<SocketAddr>().ok());
    let host = v.host.as_deref().map(split_host);
    let name = v.sni.as_deref().or(host.map(|(n, _)| n)).and_then(|n| Name::parse(n.as_bytes(), true).ok());
    let dst = addr(&v.original_dst).or_else(|| if name.is_none() { addr(&v.upstream) } else { None });
    let port = dst
        .map(|d| d.port())
        .or(host.and_then(|(_, p)| p))
        .or_else(|| addr(&v.upstream).map(|u| u.port()))
        .unwrap_or(443);
    let protocol = match v.protocol.as_deref() {
        Some("http") => Protocol::Http,
        Some("other") => Protocol::Other,
        _ => Protocol::Tls,
    };
    Ok(Some(Connection {
        recorded,
        listener: v.listener,
        time: v.time.as_deref().and_then(unix_seconds),
        name,
        client: client.ip(),
        dst,
        port,
        protocol,
    }))
}

/// How a log line was decided, the name the rules saw and the port: [`log_line`]'s answer.
pub type LogLine = (&'static str, Option<String>, u16);

/// What `replay` and `learn` read from one access-log line, for the fuzz target: `None` for a
/// line that is no connection's, else how it was decided (`allowed`, `denied`,
/// `unreplayable`), the name the rules saw and the port.
#[allow(clippy::result_unit_err)]
pub fn log_line(line: &str) -> Result<Option<LogLine>, ()> {
    Ok(connection(line)?.map(|c| {
        let recorded = match c.recorded {
            Recorded::Allowed => "allowed",
            Recorded::Denied => "denied",
            Recorded::Unreplayable => "unreplayable",
        };
        (recorded, c.name.map(|n| n.to_string()), c.port)
    }))
}

/// `host:port` (or `[v6]:port`, or a bare host) to the host and its port.
fn split_host(h: &str) -> (&str, Option<u16>) {
    match h.rsplit_once(':') {
        Some((n, p)) if !n.ends_with(':') => (n.trim_start_matches('[').trim_end_matches(']'), p.parse().ok()),
        _ => (h, None),
    }
}

/// An RFC 3339 time in UTC as the log writes it (`2026-12-06T17:27:49.123Z`; a bare date
/// `2026-12-06` is its midnight), in unix seconds.
pub(super) fn unix_seconds(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    // The date as report scopes read theirs; its start is a day before the scope would end.
    let day = Until::parse(text.get(..10)?).ok()?.ends_at() - 86_400;
    if b.len() == 10 {
        return Some(day);
    }
    if b.len() < 20 || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if h > 23 || mi > 59 || s > 60 || !text.ends_with(['Z', 'z']) {
        return None;
    }
    Some(day + h * 3600 + mi * 60 + s)
}

/// Which recorded connections to read: by listener, source and time. Shared by the commands
/// that read logs.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LogFilter {
    /// Only connections of this listener (its name, as the log's `listener`); repeatable.
    #[arg(long = "listener", value_name = "NAME")]
    pub listeners: Vec<String>,
    /// Only connections from these sources (CIDR); repeatable.
    #[arg(long = "from", value_name = "CIDR")]
    pub from: Vec<IpNet>,
    /// Only connections accepted at or after this time: RFC 3339 or YYYY-MM-DD (UTC), or an
    /// age such as `30m`, `24h`, `7d`.
    #[arg(long, value_name = "TIME", value_parser = time_arg)]
    pub since: Option<i64>,
    /// Only connections accepted before this time (as `--since`).
    #[arg(long, value_name = "TIME", value_parser = time_arg)]
    pub until: Option<i64>,
}

impl LogFilter {
    /// Whether `c` is one of the connections asked for. With a time bound, a record without a
    /// time is not.
    pub(super) fn keeps(&self, c: &Connection) -> bool {
        let listener = || c.listener.as_deref().is_some_and(|l| self.listeners.iter().any(|x| x == l));
        let from = || self.from.iter().any(|n| n.contains(&c.client.to_canonical()));
        let since = || self.since.is_none_or(|s| c.time.is_some_and(|t| t >= s));
        let until = || self.until.is_none_or(|u| c.time.is_some_and(|t| t < u));
        (self.listeners.is_empty() || listener()) && (self.from.is_empty() || from()) && since() && until()
    }
}

/// `--since`/`--until`: a time, or an age counted back from now.
fn time_arg(text: &str) -> Result<i64, String> {
    if let Some(t) = unix_seconds(text) {
        return Ok(t);
    }
    let unit = |u: char| match u {
        's' => Some(1),
        'm' => Some(60),
        'h' => Some(3600),
        'd' => Some(86_400),
        _ => None,
    };
    let age = text
        .char_indices()
        .last()
        .and_then(|(i, u)| text[..i].parse::<i64>().ok()?.checked_mul(unit(u)?))
        .filter(|a| *a >= 0)
        .ok_or_else(|| {
            format!("{text:?} is neither a time (2026-12-06T10:00:00Z, 2026-12-06) nor an age (30m, 24h, 7d)")
        })?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    Ok(now - age)
}

/// What a configuration says about the listeners connections were recorded on, found by the
/// log's `listener`: what a log line leaves out (the port a denied connection asked for) and
/// the report scopes.
#[derive(Default)]
pub(super) struct Listeners {
    /// Listener name → its place in the configuration and what its mode fixes.
    by_name: HashMap<String, Place>,
    /// The configuration's report scopes.
    report: Scopes,
}

/// One listener of the configuration.
struct Place {
    /// Its index (for its report scope).
    index: usize,
    /// The port names are reached on (`sni`: `upstream_port`; `upstream`: the fixed
    /// upstream's).
    port: Option<u16>,
    /// `upstream`: the fixed upstream, when it is an address (what a hello without SNI asks
    /// the `ip` rules about).
    upstream: Option<SocketAddr>,
}

impl Listeners {
    pub(super) fn of(config: &Config) -> Listeners {
        let place = |index: usize, mode: &ModeConfig, listen: SocketAddr| match mode {
            ModeConfig::Sni { upstream_port } => {
                Place { index, port: Some(upstream_port.unwrap_or(listen.port())), upstream: None }
            }
            ModeConfig::Upstream { upstream } => Place {
                index,
                port: upstream.rsplit_once(':').and_then(|(_, p)| p.parse().ok()),
                upstream: upstream.parse().ok(),
            },
            _ => Place { index, port: None, upstream: None },
        };
        let by_name = config
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| (l.get_ref().label(), place(i, &l.get_ref().mode, l.get_ref().listen)))
            .collect();
        Listeners { by_name, report: Scopes::of(config) }
    }

    fn place(&self, c: &Connection) -> Option<&Place> {
        self.by_name.get(c.listener.as_deref()?)
    }

    /// Completes `c` with what its listener's mode fixes: the port a name is reached on, and
    /// the fixed upstream a hello without SNI went to.
    pub(super) fn settle(&self, c: &mut Connection) {
        let Some(place) = self.place(c) else { return };
        if c.dst.is_none() && c.protocol != Protocol::Http {
            if c.name.is_none() {
                c.dst = place.upstream;
            }
            c.port = c.dst.map_or(place.port, |d| Some(d.port())).unwrap_or(c.port);
        }
    }

    /// Whether a report scope of this configuration lets `c` through at its time.
    pub(super) fn reports(&self, c: &Connection) -> bool {
        let index = self.place(c).map(|p| p.index);
        c.time.is_some_and(|at| self.report.cover_at(index, c.client, at))
    }
}

/// What reading the logs met besides connections.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Skipped {
    /// Lines that are not JSON, or not a record snigate writes.
    pub unreadable: u64,
}

/// Opens one log: `-` is standard input; gzip is recognised by its magic bytes, so that a
/// rotated log reads like any other.
fn open(path: &Path) -> io::Result<Box<dyn BufRead>> {
    let raw: Box<dyn Read> = match path.as_os_str() == "-" {
        true => Box::new(io::stdin().lock()),
        false => Box::new(File::open(path)?),
    };
    let mut buffered = BufReader::with_capacity(1 << 16, raw);
    let gzip = buffered.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    Ok(match gzip {
        // Several members, as `cat a.gz b.gz` or a log rotated while compressing writes them.
        true => Box::new(BufReader::with_capacity(1 << 16, flate2::bufread::MultiGzDecoder::new(buffered))),
        false => Box::new(buffered),
    })
}

/// Calls `each` with every connection of `paths`, in order. A log that cannot be opened, or
/// a read that fails midway, is an error naming the file; lines that cannot be read are
/// counted and skipped.
pub(super) fn read(paths: &[PathBuf], mut each: impl FnMut(Connection<'_>)) -> Result<Skipped, String> {
    let mut skipped = Skipped::default();
    let mut line = Vec::with_capacity(1024);
    for path in paths {
        let name = || if path.as_os_str() == "-" { "standard input".into() } else { path.display().to_string() };
        let mut reader = open(path).map_err(|e| format!("{}: {e}", name()))?;
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(format!("{}: {e}", name())),
            }
            let text = match std::str::from_utf8(&line) {
                Ok(t) => t.trim_end(),
                Err(_) => {
                    skipped.unreadable += 1;
                    continue;
                }
            };
            if text.is_empty() {
                continue;
            }
            match connection(text) {
                Ok(Some(c)) => each(c),
                Ok(None) => {}
                Err(()) => skipped.unreadable += 1,
            }
        }
    }
    Ok(skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_says_what_the_rules_saw() {
        let allowed = r#"{"client":"10.0.0.1:4000","sni":"a.example.com","verdict":"allow","reason":"rule","upstream":"192.0.2.1:443"}"#;
        let c = connection(allowed).unwrap().unwrap();
        assert_eq!((c.recorded, c.name.unwrap().as_str(), c.port), (Recorded::Allowed, "a.example.com", 443));
        let reported = r#"{"client":"10.0.0.1:4000","host":"b.example.com:8080","protocol":"http","verdict":"allow","reason":"report","would_reason":"default"}"#;
        let c = connection(reported).unwrap().unwrap();
        assert_eq!((c.recorded, c.name.unwrap().as_str(), c.port), (Recorded::Denied, "b.example.com", 8080));
        assert_eq!(c.protocol, Protocol::Http);
        let ech = r#"{"client":"10.0.0.1:4000","sni":"b.example.com","verdict":"allow","reason":"report","would_reason":"ech"}"#;
        assert_eq!(connection(ech).unwrap().unwrap().recorded, Recorded::Unreplayable);
        let guarded = r#"{"client":"10.0.0.1:4000","sni":"c.example.com","verdict":"deny","reason":"dst_denied"}"#;
        assert_eq!(connection(guarded).unwrap().unwrap().recorded, Recorded::Unreplayable);
        let no_name = r#"{"client":"10.0.0.1:4000","original_dst":"192.0.2.9:25","verdict":"deny","reason":"no_sni"}"#;
        let c = connection(no_name).unwrap().unwrap();
        assert_eq!((c.dst, c.port), (Some("192.0.2.9:25".parse().unwrap()), 25));
        let v6 = r#"{"client":"[::1]:4000","host":"[2001:db8::1]:8443","verdict":"deny","reason":"no_sni","upstream":"[2001:db8::1]:8443"}"#;
        let c = connection(v6).unwrap().unwrap();
        assert_eq!((c.name.is_none(), c.port), (true, 8443));
        assert!(connection(r#"{"event":"log_suppressed"}"#).unwrap().is_none());
        assert!(connection("not json").is_err());
        assert!(connection(r#"{"client":"10.0.0.1:4000","verdict":"maybe","reason":"rule"}"#).is_err());
    }

    #[test]
    fn times_read_as_the_log_writes_them() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(unix_seconds("2024-02-29T23:59:59.999Z"), Some(1_709_251_199));
        assert_eq!(unix_seconds("2024-02-29T23:59:59Z"), Some(1_709_251_199));
        assert_eq!(unix_seconds("2024-03-01"), Some(1_709_251_200));
        for bad in ["2024-13-01", "yesterday", "2024-02-29T25:00:00Z", "2024-02-29T23:59:59+02:00", ""] {
            assert_eq!(unix_seconds(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_filter_keeps_its_listener_sources_and_window() {
        let line = r#"{"time":"2026-12-06T10:00:00.000Z","listener":"egress","client":"10.1.2.3:5000","sni":"a.example.com","verdict":"allow","reason":"rule"}"#;
        let c = connection(line).unwrap().unwrap();
        let at = |t: &str| time_arg(t).unwrap();
        let filter = |listeners: &[&str], from: &[&str], since: Option<&str>, until: Option<&str>| LogFilter {
            listeners: listeners.iter().map(|l| l.to_string()).collect(),
            from: from.iter().map(|f| f.parse().unwrap()).collect(),
            since: since.map(at),
            until: until.map(at),
        };
        assert!(filter(&[], &[], None, None).keeps(&c));
        assert!(filter(&["other", "egress"], &["10.0.0.0/8"], Some("2026-12-06"), Some("2026-12-07")).keeps(&c));
        assert!(!filter(&["other"], &[], None, None).keeps(&c));
        assert!(!filter(&[], &["10.9.0.0/16"], None, None).keeps(&c));
        assert!(!filter(&[], &[], Some("2026-12-06T10:00:01Z"), None).keeps(&c));
        assert!(!filter(&[], &[], None, Some("2026-12-06T10:00:00Z")).keeps(&c), "until is exclusive");
        assert!(filter(&[], &[], Some("1h"), None).since.unwrap() > at("2026-01-01"), "an age counts back from now");
        assert!(time_arg("soon").is_err() && time_arg("-5h").is_err() && time_arg("5w").is_err());
    }

    #[test]
    fn gzip_and_plain_logs_read_alike_and_bad_lines_are_counted() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let text: &[u8] =
            b"{\"client\":\"10.0.0.1:1\",\"sni\":\"a.example.com\",\"verdict\":\"allow\",\"reason\":\"rule\"}\n\
                    garbage\n\xff\n\n{\"event\":\"x\"}\n";
        let plain = dir.path().join("a.log");
        std::fs::write(&plain, text).unwrap();
        let gz = dir.path().join("a.log.1.gz");
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(text).unwrap();
        std::fs::write(&gz, e.finish().unwrap()).unwrap();
        let mut names = Vec::new();
        let skipped = read(&[plain, gz], |c| names.push(c.name.unwrap().to_string())).unwrap();
        assert_eq!(names, ["a.example.com", "a.example.com"]);
        assert_eq!(skipped.unreadable, 4, "per file: the garbage line, and the line that is not UTF-8");
        let missing = read(&[dir.path().join("none.log")], |_| {}).unwrap_err();
        assert!(missing.contains("none.log"), "{missing}");
    }
}

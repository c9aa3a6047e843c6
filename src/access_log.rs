//! The access log: one line per finished connection, JSON or text, to stdout or a file.
//!
//! Connections never wait for the log. Each finished connection is queued to a writer thread
//! on a bounded channel; when the queue is full the line is dropped and counted. Denial lines
//! are also rate-limited per listener (`[log] deny_lines_per_second`), so that a flood of
//! refused connections cannot crowd allowed connections out of the queue or turn the log into
//! the bottleneck. Once a second the writer prints one summary line per listener that had lines
//! suppressed or dropped, saying how many.
//!
//! A log file is reopened on request ([`AccessLog::reopen`], SIGUSR1), as nginx does: logrotate
//! renames the file, signals, and the next line goes to a new file at the configured path.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::config::{LogConfig, LogFormat};
use crate::metrics::registry::Suppressed;
use crate::outcome::{Disposition, Outcome, rfc3339};

/// Lines queued for the writer before new ones are dropped.
pub const QUEUE: usize = 8192;
/// How often suppressed and dropped lines are summarised.
const SUMMARY_EVERY: Duration = Duration::from_secs(1);

/// What the writer thread receives.
enum Message {
    /// A finished connection.
    Line(Box<Outcome>),
    /// A new listener's counters, to summarise.
    Listener(Arc<Limiter>),
    /// Write what is queued, flush and stop; the sender waits on the enclosed channel.
    Close(mpsc::Sender<()>),
    /// Wakes the writer to reopen its file (the request itself is [`AccessLog::reopen_asked`]).
    Reopen,
}

/// The access log of a server: the writer thread and its queue. `Off` has neither.
pub struct AccessLog {
    /// The format, `Off` included.
    format: LogFormat,
    /// The writer's queue; `None` when the log is off.
    tx: Option<SyncSender<Message>>,
    /// `[log] deny_lines_per_second`.
    deny_per_second: u32,
    /// The writer thread, joined by [`finish`](AccessLog::finish).
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Set by [`reopen`](AccessLog::reopen), taken by the writer: a flag rather than a message,
    /// so that asking never waits on a full queue.
    reopen_asked: Arc<AtomicBool>,
}

impl AccessLog {
    /// Opens the log as configured: a file is opened for appending (created if missing) now,
    /// so that an unwritable path is a startup error.
    pub fn open(config: &LogConfig) -> io::Result<AccessLog> {
        if config.format == LogFormat::Off {
            return Ok(AccessLog {
                format: LogFormat::Off,
                tx: None,
                deny_per_second: 0,
                writer: Mutex::new(None),
                reopen_asked: Arc::default(),
            });
        }
        let out: Box<dyn Write + Send> = match &config.path {
            Some(path) => Box::new(open_file(path)?),
            None => Box::new(io::stdout()),
        };
        Ok(AccessLog::spawn(config.format, config.deny_lines_per_second, out, config.path.clone()))
    }

    /// A log writing `format` lines to `out`, on its own thread.
    pub fn to_writer(format: LogFormat, deny_per_second: u32, out: Box<dyn Write + Send>) -> AccessLog {
        AccessLog::spawn(format, deny_per_second, out, None)
    }

    /// The writer thread on `out`, which is the file at `path` when there is one to reopen.
    fn spawn(format: LogFormat, deny_per_second: u32, out: Box<dyn Write + Send>, path: Option<PathBuf>) -> AccessLog {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let reopen_asked = Arc::new(AtomicBool::new(false));
        let file = Reopen { path, asked: reopen_asked.clone() };
        let writer = std::thread::Builder::new()
            .name("snigate-access-log".into())
            .spawn(move || write_loop(rx, out, format, file))
            .expect("spawn the access-log writer");
        AccessLog { format, tx: Some(tx), deny_per_second, writer: Mutex::new(Some(writer)), reopen_asked }
    }

    /// Asks the writer to reopen the log file at its configured path (after a rotation moved
    /// it): lines written from then on go to the file now there, created if missing. A log on
    /// stdout, or off, has nothing to reopen. Never blocks.
    pub fn reopen(&self) {
        let Some(tx) = &self.tx else { return };
        self.reopen_asked.store(true, Ordering::Relaxed);
        // A full queue means a busy writer, which sees the flag after its next line.
        let _ = tx.try_send(Message::Reopen);
    }

    /// The handle one listener logs through.
    pub fn listener(&self, name: &str) -> ListenerLog {
        let limiter = Arc::new(Limiter::new(name, self.deny_per_second));
        if let Some(tx) = &self.tx {
            let _ = tx.send(Message::Listener(limiter.clone()));
        }
        ListenerLog { tx: self.tx.clone(), limiter }
    }

    /// The configured format.
    pub fn format(&self) -> LogFormat {
        self.format
    }

    /// Writes every line queued so far, flushes and stops the writer, waiting at most
    /// `timeout` (the destination may be stuck). Lines sent afterwards are discarded.
    pub fn finish(&self, timeout: Duration) {
        let Some(tx) = &self.tx else { return };
        let (done_tx, done) = mpsc::channel();
        let deadline = Instant::now() + timeout;
        let mut msg = Message::Close(done_tx);
        // A full queue drains at the writer's pace; retry until the deadline.
        loop {
            match tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
        if done.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_ok()
            && let Some(writer) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take()
        {
            let _ = writer.join();
        }
    }
}

/// One listener's access to the log: its rate limit and the shared queue.
pub struct ListenerLog {
    /// The writer's queue; `None` when the log is off.
    tx: Option<SyncSender<Message>>,
    /// Denial-line budget and the counts for the summary line.
    limiter: Arc<Limiter>,
}

impl ListenerLog {
    /// A new `[log] deny_lines_per_second` for this listener, from now on.
    pub fn set_deny_lines_per_second(&self, per_second: u32) {
        self.limiter.per_second.store(per_second, Ordering::Relaxed);
    }

    /// Whether lines are written at all (the format is not `off`): the log-only fields of an
    /// outcome need not be filled otherwise.
    pub fn is_on(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues the line for `o`, or says why it was not: a denial beyond the rate, or a full
    /// queue. Never blocks.
    pub fn write(&self, o: Outcome) -> Result<(), Suppressed> {
        let Some(tx) = &self.tx else { return Ok(()) };
        // Errors are limited with denials: an outage turns every connection into one.
        if o.verdict != Disposition::Allow && !self.limiter.admit() {
            self.limiter.suppressed.fetch_add(1, Ordering::Relaxed);
            return Err(Suppressed::RateLimit);
        }
        match tx.try_send(Message::Line(Box::new(o))) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.limiter.dropped.fetch_add(1, Ordering::Relaxed);
                Err(Suppressed::QueueFull)
            }
            // The writer has finished (shutdown): nothing more is written.
            Err(TrySendError::Disconnected(_)) => Ok(()),
        }
    }
}

/// A per-listener budget of denial lines in fixed one-second windows, lock-free.
struct Limiter {
    /// The listener's name, for the summary line.
    name: Arc<str>,
    /// Lines per window; 0 is no limit (a SIGHUP may change it).
    per_second: AtomicU32,
    /// Window numbers count seconds from here.
    epoch: Instant,
    /// The current window.
    window: AtomicU64,
    /// Denial lines admitted in the current window.
    used: AtomicU64,
    /// Suppressed since the last summary (the writer takes it).
    suppressed: AtomicU64,
    /// Dropped on a full queue since the last summary (the writer takes it).
    dropped: AtomicU64,
}

impl Limiter {
    fn new(name: &str, per_second: u32) -> Limiter {
        Limiter {
            name: name.into(),
            per_second: AtomicU32::new(per_second),
            epoch: Instant::now(),
            window: AtomicU64::new(0),
            used: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Takes one line from the current window's budget.
    fn admit(&self) -> bool {
        let per_second = self.per_second.load(Ordering::Relaxed);
        if per_second == 0 {
            return true;
        }
        let now = self.epoch.elapsed().as_secs();
        let window = self.window.load(Ordering::Relaxed);
        // The thread that moves the window on resets the count; a racing denial may be counted
        // in either window, which only blurs the boundary by a line.
        if window != now && self.window.compare_exchange(window, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.used.store(0, Ordering::Relaxed);
        }
        self.used.fetch_add(1, Ordering::Relaxed) < u64::from(per_second)
    }
}

/// Opens the log file at `path` for appending, created if missing.
fn open_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("open access log {}: {e}", path.display())))
}

/// What the writer needs to reopen its file.
struct Reopen {
    /// The configured path; `None` for stdout and other writers.
    path: Option<PathBuf>,
    /// Set when a reopen is asked for.
    asked: Arc<AtomicBool>,
}

impl Reopen {
    /// When a reopen was asked for, the lines so far flushed to the old file and `out` switched
    /// to the file now at the path. A file that cannot be opened leaves `out` as it was: lines
    /// keep going to the renamed file rather than nowhere.
    fn apply(&self, out: &mut BufWriter<Box<dyn Write + Send>>) {
        // A load first: this runs after every line, and a swap would write the cache line.
        if !self.asked.load(Ordering::Relaxed) || !self.asked.swap(false, Ordering::Relaxed) {
            return;
        }
        let Some(path) = &self.path else { return };
        let _ = out.flush();
        match open_file(path) {
            Ok(file) => {
                *out.get_mut() = Box::new(file);
                tracing::info!(path = %path.display(), "access log reopened");
            }
            Err(e) => tracing::error!(error = %e, "cannot reopen the access log; still writing to the old file"),
        }
    }
}

fn write_loop(rx: Receiver<Message>, out: Box<dyn Write + Send>, format: LogFormat, file: Reopen) {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    let mut listeners: Vec<Arc<Limiter>> = Vec::new();
    let mut next_summary = Instant::now() + SUMMARY_EVERY;
    let mut line = String::new();
    loop {
        let msg = match rx.try_recv() {
            Ok(m) => Some(m),
            Err(TryRecvError::Empty) => {
                // Idle: make what was written visible, then sleep until a line or the summary.
                let _ = out.flush();
                match rx.recv_timeout(next_summary.saturating_duration_since(Instant::now())) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        match msg {
            Some(Message::Line(o)) => {
                line.clear();
                format_line(format, &o, &mut line);
                let _ = out.write_all(line.as_bytes());
            }
            Some(Message::Listener(l)) => listeners.push(l),
            Some(Message::Reopen) | None => {}
            Some(Message::Close(done)) => {
                summarise(&listeners, format, &mut out);
                let _ = out.flush();
                let _ = done.send(());
                return;
            }
        }
        file.apply(&mut out);
        if Instant::now() >= next_summary {
            summarise(&listeners, format, &mut out);
            next_summary = Instant::now() + SUMMARY_EVERY;
        }
    }
    summarise(&listeners, format, &mut out);
    let _ = out.flush();
}

/// One line per listener that had lines suppressed or dropped since the last summary.
fn summarise(listeners: &[Arc<Limiter>], format: LogFormat, out: &mut impl Write) {
    for l in listeners {
        let suppressed = l.suppressed.swap(0, Ordering::Relaxed);
        let dropped = l.dropped.swap(0, Ordering::Relaxed);
        if suppressed == 0 && dropped == 0 {
            continue;
        }
        let mut message = Vec::new();
        if suppressed > 0 {
            message.push(format!(
                "suppressed {suppressed} denial lines in the last second (limit {} per second)",
                l.per_second.load(Ordering::Relaxed)
            ));
        }
        if dropped > 0 {
            message.push(format!("dropped {dropped} lines: the access-log writer fell behind"));
        }
        let message = message.join("; ");
        let time = rfc3339(SystemTime::now());
        let _ = match format {
            LogFormat::Json => writeln!(
                out,
                "{}",
                serde_json::json!({
                    "time": time,
                    "listener": &*l.name,
                    "event": "log_suppressed",
                    "suppressed": suppressed,
                    "dropped": dropped,
                    "message": message,
                })
            ),
            LogFormat::Text => writeln!(out, "{time} {} {message}", l.name),
            LogFormat::Off => Ok(()),
        };
    }
}

/// A text-log value as it is when it cannot be mistaken for more fields (printable ASCII with no
/// space, `=` or `"`), else quoted and escaped, so that a client-chosen value (an ALPN such as
/// `x rule=a:1`) cannot forge a field.
fn text_value(s: &str) -> std::borrow::Cow<'_, str> {
    let plain = !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b'=' && b != b'"');
    if plain { s.into() } else { format!("{s:?}").into() }
}

/// Appends the line for `o`, newline included.
pub fn format_line(format: LogFormat, o: &Outcome, line: &mut String) {
    use std::fmt::Write as _;
    match format {
        LogFormat::Off => return,
        LogFormat::Json => {
            // Outcome holds strings, numbers and addresses only: serialising cannot fail.
            line.push_str(&serde_json::to_string(o).unwrap_or_default());
        }
        LogFormat::Text => {
            let dash = |s: Option<String>| s.unwrap_or_else(|| "-".into());
            let alpn = o.alpn.join(",");
            let _ = write!(
                line,
                "{} {} {} dst={} proto={} {} {} sni={} host={} alpn={} tls={} ech={} rule={} upstream={} stage={} up={} down={} {:.3}s",
                rfc3339(o.time),
                text_value(&o.listener),
                o.client,
                dash(o.original_dst.map(|a| a.to_string())),
                o.protocol.as_str(),
                o.verdict.as_str(),
                o.reason,
                text_value(o.sni.as_deref().unwrap_or("-")),
                text_value(o.host.as_deref().unwrap_or("-")),
                text_value(if alpn.is_empty() { "-" } else { &alpn }),
                text_value(o.tls_version.as_deref().unwrap_or("-")),
                o.ech,
                text_value(o.rule.as_deref().unwrap_or("-")),
                dash(o.upstream.map(|a| a.to_string())),
                o.stage.as_str(),
                o.bytes_up,
                o.bytes_down,
                o.duration
            );
            if o.requests > 0 {
                let _ = write!(line, " requests={}", o.requests);
            }
            if let Some(would) = o.would_reason {
                let _ = write!(line, " would_reason={would}");
            }
            if let Some(e) = &o.error {
                let _ = write!(line, " error={e:?}");
            }
        }
    }
    line.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome() -> Outcome {
        Outcome {
            time: std::time::UNIX_EPOCH + Duration::from_millis(1_709_251_199_999),
            listener: "edge".into(),
            client: "127.0.0.1:40000".parse().unwrap(),
            original_dst: None,
            protocol: crate::outcome::Seen::Tls,
            sni: Some("acme.my.salesforce.com".into()),
            host: None,
            alpn: vec!["h2".into(), "http/1.1".into()],
            tls_version: Some("TLSv1.3".into()),
            ech: false,
            verdict: Disposition::Allow,
            reason: crate::reason::Reason::Rule,
            would_reason: None,
            rule: Some("salesforce.rules:3".into()),
            ruleset: Some("salesforce.rules".into()),
            upstream: Some("10.0.0.1:443".parse().unwrap()),
            stage: crate::outcome::Stage::Splice,
            requests: 0,
            bytes_up: 517,
            bytes_down: 4096,
            duration: 0.25,
            error: None,
            noted: 0,
        }
    }

    #[test]
    fn lines_in_each_format() {
        let mut line = String::new();
        format_line(LogFormat::Json, &outcome(), &mut line);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["time"], "2024-02-29T23:59:59.999Z");
        assert_eq!(v["rule"], "salesforce.rules:3");
        assert_eq!(v["bytes_down"], 4096);
        assert!(v.get("ruleset").is_none(), "the metric label stays out of the log");
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);

        line.clear();
        format_line(LogFormat::Text, &outcome(), &mut line);
        assert_eq!(
            line,
            "2024-02-29T23:59:59.999Z edge 127.0.0.1:40000 dst=- proto=tls allow rule sni=acme.my.salesforce.com \
             host=- alpn=h2,http/1.1 tls=TLSv1.3 ech=false rule=salesforce.rules:3 upstream=10.0.0.1:443 stage=splice \
             up=517 down=4096 0.250s\n"
        );
        line.clear();
        format_line(LogFormat::Off, &outcome(), &mut line);
        assert!(line.is_empty());
    }

    #[test]
    fn the_writer_summarises_suppressed_lines() {
        #[derive(Clone, Default)]
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let out = Shared::default();
        let log = AccessLog::to_writer(LogFormat::Text, 2, Box::new(out.clone()));
        let l = log.listener("edge");
        let denied = Outcome { verdict: Disposition::Deny, reason: crate::reason::Reason::Default, ..outcome() };
        let results: Vec<_> = (0..5).map(|_| l.write(denied.clone())).collect();
        let suppressed = results.iter().filter(|r| **r == Err(Suppressed::RateLimit)).count();
        // Three beyond the budget of two, or fewer if the writes straddle a second boundary.
        assert!((1..=3).contains(&suppressed), "{results:?}");
        assert_eq!(l.write(outcome()), Ok(()), "allowed lines are not limited");
        log.finish(Duration::from_secs(5));
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().filter(|l| l.contains(" deny ")).count(), 5 - suppressed, "{text}");
        assert_eq!(text.lines().filter(|l| l.contains(" allow ")).count(), 1, "{text}");
        assert!(text.contains(&format!("edge suppressed {suppressed} denial lines in the last second")), "{text}");
        assert_eq!(l.write(outcome()), Ok(()), "after finish, lines are discarded quietly");
    }

    /// Error lines (allowed, then failed upstream) share the denial budget: an outage makes one
    /// of every connection. Allowed lines never do.
    #[test]
    fn error_lines_are_limited_with_denials() {
        let log = AccessLog::to_writer(LogFormat::Text, 1, Box::new(io::sink()));
        let l = log.listener("edge");
        let failed = Outcome { verdict: Disposition::Error, reason: crate::reason::Reason::UpstreamError, ..outcome() };
        let denied = Outcome { verdict: Disposition::Deny, reason: crate::reason::Reason::Default, ..outcome() };
        // Four lines against a budget of one: even straddling a second boundary, some are beyond it.
        let results = [l.write(failed.clone()), l.write(denied), l.write(failed.clone()), l.write(failed)];
        assert!(results.contains(&Err(Suppressed::RateLimit)), "{results:?}");
        assert!((0..10).all(|_| l.write(outcome()).is_ok()), "allowed lines are not limited");
        log.finish(Duration::from_secs(5));
    }

    #[test]
    fn the_limiter_admits_its_budget_per_window() {
        let l = Limiter::new("t", 3);
        let admitted = (0..10).filter(|_| l.admit()).count();
        // All ten fall in one window unless the test straddles a second boundary.
        assert!((3..=6).contains(&admitted), "{admitted}");
        let unlimited = Limiter::new("t", 0);
        assert!((0..1000).all(|_| unlimited.admit()));
    }

    /// A client-chosen value cannot add fields to a text line.
    #[test]
    fn text_values_cannot_forge_fields() {
        let o = Outcome { alpn: vec!["x rule=a:1".into()], ..outcome() };
        let mut line = String::new();
        format_line(LogFormat::Text, &o, &mut line);
        assert!(line.contains(r#" alpn="x rule=a:1" "#), "{line}");
        assert!(!line.contains("alpn=x "), "{line}");
        assert_eq!(text_value("h2,http/1.1"), "h2,http/1.1");
        assert_eq!(text_value("a\"b"), r#""a\"b""#);
        assert_eq!(text_value(""), r#""""#);
    }
}

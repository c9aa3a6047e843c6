//! Name resolution for `sni` mode: hickory's resolver, configured from the system
//! (/etc/resolv.conf and /etc/hosts), with its cache, which keeps each answer for its TTL.
//!
//! The C library reads those files again on every lookup; hickory reads them once. So that a
//! name added to /etc/hosts (a split-horizon entry for a private endpoint) or a new name server
//! takes effect without a restart, the files are looked at again at most once a second, on a
//! lookup, and a resolver built afresh (with an empty cache) when either has changed.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use hickory_resolver::TokioResolver;

/// The files the system resolver is configured from.
const SYSTEM_FILES: [&str; 2] = ["/etc/resolv.conf", "/etc/hosts"];

/// How often the files are looked at, at most.
const RECHECK: Duration = Duration::from_secs(1);

/// Resolves allowed SNI names to upstream addresses.
pub struct Resolver {
    /// The resolver the files configure now.
    current: ArcSwap<Backend>,
    /// What the files looked like when `current` was built.
    seen: Mutex<Vec<Stamp>>,
    /// Milliseconds from `born` to the last look at the files.
    checked: AtomicU64,
    /// When this resolver was made.
    born: Instant,
}

/// A resolver built from the system's files.
enum Backend {
    /// hickory, with a TTL-respecting cache.
    Dns(Box<TokioResolver>),
    /// The C library's getaddrinfo (no cache), when the system DNS configuration is unreadable.
    /// Names are looked up absolute (with a trailing dot), which DNS answers and the hosts file
    /// does not.
    System,
}

/// What changes when a file is edited or replaced: its identity, size and modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Option<(u64, u64, u64, SystemTime)>);

/// The system files' stamps now.
fn stamps() -> Vec<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let stamp = |path: &str| {
        let meta = std::fs::metadata(Path::new(path)).ok();
        Stamp(meta.map(|m| (m.dev(), m.ino(), m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH))))
    };
    SYSTEM_FILES.iter().map(|p| stamp(p)).collect()
}

impl Backend {
    fn from_system() -> Backend {
        match TokioResolver::builder_tokio().and_then(|b| b.build()) {
            Ok(resolver) => Backend::Dns(Box::new(resolver)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the system DNS configuration; using getaddrinfo without a cache");
                Backend::System
            }
        }
    }
}

impl Resolver {
    /// The system-configured resolver, or getaddrinfo when /etc/resolv.conf cannot be read.
    pub fn from_system() -> Resolver {
        Resolver {
            seen: Mutex::new(stamps()),
            current: ArcSwap::from_pointee(Backend::from_system()),
            checked: AtomicU64::new(0),
            born: Instant::now(),
        }
    }

    /// The addresses of `name`, with `port`, in the resolver's order. `name` is a validated
    /// host name, looked up as absolute (no search domains: an SNI is a full name).
    pub async fn lookup(&self, name: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        self.refresh();
        let backend = self.current.load_full();
        let addrs: Vec<SocketAddr> = match &*backend {
            Backend::Dns(r) => r
                .lookup_ip(format!("{name}."))
                .await
                .map_err(|e| io::Error::new(io::ErrorKind::NotFound, format!("{name}: {e}")))?
                .iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect(),
            // Absolute here too: no search domain may turn an SNI into an internal name.
            Backend::System => tokio::net::lookup_host((format!("{name}."), port)).await?.collect(),
        };
        if addrs.is_empty() {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("{name}: no addresses")));
        }
        Ok(addrs)
    }

    /// Builds the resolver afresh when the system's files changed, looking at most once per
    /// [`RECHECK`] (one lookup a second pays for two `stat`s; the others for an atomic load).
    fn refresh(&self) {
        let now = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX).max(1);
        let last = self.checked.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= RECHECK.as_millis() as u64;
        if !due || self.checked.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            return;
        }
        let fresh = stamps();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if *seen != fresh {
            tracing::info!("the system's resolver configuration changed; reading it again");
            self.current.store(std::sync::Arc::new(Backend::from_system()));
            *seen = fresh;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hosts_file_names_resolve() {
        let r = Resolver::from_system();
        let got = r.lookup("localhost", 443).await.unwrap();
        assert!(got.contains(&"127.0.0.1:443".parse().unwrap()), "{got:?}");
    }
}

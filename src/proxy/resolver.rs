//! Name resolution for `sni` mode: hickory's resolver, configured from the system
//! (/etc/resolv.conf and /etc/hosts), with its cache, which keeps each answer for its TTL.

use std::io;
use std::net::SocketAddr;

use hickory_resolver::TokioResolver;

/// Resolves allowed SNI names to upstream addresses.
pub enum Resolver {
    /// hickory, with a TTL-respecting cache.
    Dns(Box<TokioResolver>),
    /// The C library's getaddrinfo (no cache), when the system DNS configuration is unreadable.
    /// Names are looked up absolute (with a trailing dot), which DNS answers and the hosts file
    /// does not.
    System,
}

impl Resolver {
    /// The system-configured resolver, or getaddrinfo when /etc/resolv.conf cannot be read.
    pub fn from_system() -> Resolver {
        match TokioResolver::builder_tokio().and_then(|b| b.build()) {
            Ok(resolver) => Resolver::Dns(Box::new(resolver)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the system DNS configuration; using getaddrinfo without a cache");
                Resolver::System
            }
        }
    }

    /// The addresses of `name`, with `port`, in the resolver's order. `name` is a validated
    /// host name, looked up as absolute (no search domains: an SNI is a full name).
    pub async fn lookup(&self, name: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        let addrs: Vec<SocketAddr> = match self {
            Resolver::Dns(r) => r
                .lookup_ip(format!("{name}."))
                .await
                .map_err(|e| io::Error::new(io::ErrorKind::NotFound, format!("{name}: {e}")))?
                .iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect(),
            // Absolute here too: no search domain may turn an SNI into an internal name.
            Resolver::System => tokio::net::lookup_host((format!("{name}."), port)).await?.collect(),
        };
        if addrs.is_empty() {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("{name}: no addresses")));
        }
        Ok(addrs)
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

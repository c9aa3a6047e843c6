//! `snigate healthcheck URL`: one HTTP GET, for container HEALTHCHECKs on images that have no
//! curl (the shipped image is `scratch`). Exit 0 on `200`, 1 on anything else.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::{EXIT_INVALID, EXIT_USAGE};

/// Arguments of `snigate healthcheck`.
#[derive(Debug, clap::Args)]
pub struct HealthcheckArgs {
    /// `http://HOST:PORT/PATH`, for example `http://127.0.0.1:9464/healthz`.
    pub url: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 2.0, value_name = "SECONDS")]
    pub timeout: f64,
}

/// Probes the URL; prints the status line (or the failure) and exits 0 only on `200`.
pub fn healthcheck_command(args: &HealthcheckArgs) -> ExitCode {
    let Some((addr, path)) = parse(&args.url) else {
        eprintln!("snigate healthcheck: expected http://HOST:PORT/PATH, found {:?}", args.url);
        return ExitCode::from(EXIT_USAGE);
    };
    let timeout = Duration::try_from_secs_f64(args.timeout).unwrap_or(Duration::from_secs(2));
    match probe(addr, path, timeout) {
        Ok(status) => {
            println!("{status}");
            if status.split_whitespace().nth(1) == Some("200") {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_INVALID)
            }
        }
        Err(e) => {
            eprintln!("snigate healthcheck: {}: {e}", args.url);
            ExitCode::from(EXIT_INVALID)
        }
    }
}

/// `http://host:port/path` to (host:port, /path).
fn parse(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = rest.find('/').map_or((rest, "/"), |at| (&rest[..at], &rest[at..]));
    (!authority.is_empty() && authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()))
        .then_some((authority, path))
}

/// Sends `GET path` to `authority` and returns the response's status line, all within `timeout`.
fn probe(authority: &str, path: &str, timeout: Duration) -> std::io::Result<String> {
    let deadline = Instant::now() + timeout;
    let addrs: Vec<SocketAddr> = authority.to_socket_addrs()?.collect();
    let addr = addrs.first().ok_or_else(|| std::io::Error::other("no address"))?;
    let mut s = TcpStream::connect_timeout(addr, timeout)?;
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    s.set_write_timeout(Some(left()))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")?;
    let mut head = Vec::new();
    let mut chunk = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 8192 {
        s.set_read_timeout(Some(left()))?;
        match s.read(&mut chunk)? {
            0 => break,
            n => head.extend_from_slice(&chunk[..n]),
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    Ok(String::from_utf8_lossy(line).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(parse("http://127.0.0.1:9464/healthz"), Some(("127.0.0.1:9464", "/healthz")));
        assert_eq!(parse("http://[::1]:9464"), Some(("[::1]:9464", "/")));
        assert_eq!(parse("https://127.0.0.1:9464/healthz"), None);
        assert_eq!(parse("http://127.0.0.1/healthz"), None, "the port is required");
    }
}

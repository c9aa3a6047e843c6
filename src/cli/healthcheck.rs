//! `snigate healthcheck`: probes a health endpoint, for container HEALTHCHECKs.

use std::io::{Read, Write};
use std::process::ExitCode;

use super::common::EXIT_INVALID;

/// Arguments of `snigate healthcheck`.
#[derive(Debug, clap::Args)]
pub struct HealthcheckArgs {
    /// The endpoint, `http://HOST:PORT/PATH`.
    #[arg(default_value = "http://127.0.0.1:9464/healthz")]
    pub url: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 3.0)]
    pub timeout: f64,
}

pub(super) fn healthcheck_command(args: &HealthcheckArgs) -> ExitCode {
    match probe(&args.url, std::time::Duration::from_secs_f64(args.timeout.max(0.001))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("snigate healthcheck: {}: {e}", args.url);
            ExitCode::from(EXIT_INVALID)
        }
    }
}

/// One HTTP/1.0 GET; Ok when the status is 200.
fn probe(url: &str, timeout: std::time::Duration) -> Result<(), String> {
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let addr =
        std::net::ToSocketAddrs::to_socket_addrs(authority).map_err(|e| e.to_string())?.next().ok_or("no address")?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut status = [0u8; 12];
    stream.read_exact(&mut status).map_err(|e| e.to_string())?;
    match &status[9..12] {
        b"200" => Ok(()),
        other => Err(format!("status {}", String::from_utf8_lossy(other))),
    }
}

//! The proxies snigate is compared with (HAProxy, nginx with stream and ssl_preread, sniproxy):
//! each one's configuration for the allowlist every proxy gets, optionally behind a deny list of
//! domains, as many workers as asked, no per-connection logging, and how it is told to reload.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::find_program;

/// The allowlist every proxy gets, in snigate's rule language.
pub const RULES: &str = "allow *.my.salesforce.com\nallow login.salesforce.com\n";

/// The whole load comes from 127.0.0.1, one source: the per-source limits, which a deployment
/// keeps, are lifted here as the peers have none, or the idle connections and c256 would meet
/// them.
pub const SOURCE_LIMITS: &str = "[limits]\nmax_connections_per_source = 1000000\nmax_hellos_per_source = 1000000\n";

/// Where and what one peer serves.
pub struct Site<'a> {
    /// Where its configuration and deny files are written.
    pub dir: &'a Path,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Where allowed names go.
    pub backend: SocketAddr,
    /// A closed local port: nginx and sniproxy cannot reject by name, so denied names go here.
    pub closed: SocketAddr,
    /// This process's descriptor limit: HAProxy refuses a `maxconn` beyond it.
    pub nofile: u64,
    /// Domains denied with every name below them, ahead of the allowlist; empty: none.
    pub deny: &'a [String],
    /// Names the deny files of this list, so that a reload reads new files, not a file
    /// rewritten under the running proxy.
    pub generation: u32,
    /// HAProxy in master-worker mode (`-W`), the mode that reloads on SIGUSR2.
    pub reloadable: bool,
    /// Workers: HAProxy `nbthread`, nginx `worker_processes` (with `reuseport` above 1, its
    /// fastest form for several workers); sniproxy is single-threaded.
    pub workers: usize,
}

/// The command that starts a configured peer.
pub struct Launch {
    /// The executable.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
}

/// The signal that makes `peer` read its configuration again.
pub fn reload_signal(peer: &str) -> &'static str {
    if peer.starts_with("haproxy") { "USR2" } else { "HUP" }
}

/// The deny list as plain domains, one a line (snigate's list format, HAProxy's pattern file):
/// written once per generation.
pub fn domain_file(site: &Site) -> PathBuf {
    let path = site.dir.join(format!("deny-{}.txt", site.generation));
    if !path.exists() {
        let mut text = String::with_capacity(site.deny.len() * 24);
        for d in site.deny {
            text.push_str(d);
            text.push('\n');
        }
        std::fs::write(&path, text).unwrap();
    }
    path
}

/// Writes `peer`'s configuration for `site` (into `site.dir`, under the peer's name, so that
/// writing it again replaces it) and returns how to start it; `None` when the peer is not
/// installed.
///
/// - `haproxy`: the deny list as exact lookups in HAProxy's pattern tree, one per suffix of
///   the name (`req.ssl_sni,lower,field(-1,.,K) -m str -f FILE` for K = 2 up to the most
///   labels of an entry): the name or any name below an entry, in O(K log N).
/// - `haproxy-dom`: `req.ssl_sni -i -m dom -f FILE`, a linear scan of the list (HAProxy caches
///   recent results); `dom` also matches an entry in the middle of a name.
/// - `nginx`: `map $ssl_preread_server_name` with `hostnames` and `.domain` entries (the domain
///   and every name below it) to the closed port.
/// - `sniproxy`: one case-insensitive regex `^(.+\.)?domain$` per entry to the closed port,
///   tried in order before the allowlist's.
pub fn configure(peer: &str, site: &Site) -> Option<Launch> {
    let (addr, backend, closed, d) = (site.addr, site.backend, site.closed, site.dir.display());
    let workers = site.workers;
    let reuseport = if workers > 1 { " reuseport" } else { "" };
    let path = |name: &str| site.dir.join(name).to_str().expect("a UTF-8 path").to_string();
    match peer {
        "haproxy" | "haproxy-dom" => {
            let program = find_program(&["haproxy"])?;
            let maxconn = site.nofile.saturating_sub(100) / 2;
            let mut deny = String::new();
            if !site.deny.is_empty() {
                let file = domain_file(site);
                let file = file.display();
                if peer == "haproxy" {
                    let labels = site.deny.iter().map(|d| d.split('.').count()).max().unwrap_or(2);
                    for k in 2..=labels {
                        writeln!(deny, "  acl denied req.ssl_sni,lower,field(-1,.,{k}) -m str -f {file}").unwrap();
                    }
                } else {
                    writeln!(deny, "  acl denied req.ssl_sni -i -m dom -f {file}").unwrap();
                }
                deny.push_str("  tcp-request content reject if denied\n");
            }
            let cfg = format!(
                "global\n  nbthread {workers}\n  maxconn {maxconn}\n\
                 defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 600s\n  timeout server 600s\n\
                 frontend sni\n  bind {addr}\n  tcp-request inspect-delay 10s\n{deny}\
                 \x20 acl allowed req.ssl_sni -i login.salesforce.com\n\
                 \x20 acl allowed req.ssl_sni -i -m end .my.salesforce.com\n\
                 \x20 tcp-request content reject unless allowed\n  default_backend up\n\
                 backend up\n  server backend {backend}\n"
            );
            let cfg_path = path("haproxy.cfg");
            std::fs::write(&cfg_path, cfg).unwrap();
            let mut args: Vec<String> = Vec::new();
            if site.reloadable {
                args.push("-W".into());
            }
            args.extend(["-db".into(), "-f".into(), cfg_path]);
            Some(Launch { program, args })
        }
        "nginx" => {
            let program = find_program(&["nginx"])?;
            let module =
                ["/usr/lib/nginx/modules/ngx_stream_module.so", "/usr/lib64/nginx/modules/ngx_stream_module.so"]
                    .into_iter()
                    .find(|m| Path::new(m).exists());
            let mut load = module.map(|m| format!("load_module {m};\n")).unwrap_or_default();
            // Under a wrapper (valgrind) the one process serving must be the one started: a
            // forked worker would escape the profiler's controls.
            if !super::wrapper().is_empty() {
                load.push_str("master_process off;\n");
            }
            let nofile = site.nofile;
            let (mut sizes, mut deny) = (String::new(), String::new());
            if !site.deny.is_empty() {
                let file = site.dir.join(format!("nginx-deny-{}.map", site.generation));
                let mut text = String::with_capacity(site.deny.len() * 40);
                for name in site.deny {
                    writeln!(text, ".{name} {closed};").unwrap();
                }
                std::fs::write(&file, text).unwrap();
                // Room for the hash to build at the first size tried (nginx tries up to 1,000
                // sizes below the maximum, each a pass over every key), and buckets that hold
                // the longest names.
                let max = (site.deny.len() * 2).max(2048);
                sizes = format!("  map_hash_max_size {max};\n  map_hash_bucket_size 512;\n");
                deny = format!("    include {};\n", file.display());
            }
            let cfg = format!(
                "{load}daemon off;\nworker_processes {workers};\nworker_rlimit_nofile {nofile};\npid {d}/nginx.pid;\n\
                 error_log {d}/nginx.log crit;\nevents {{ worker_connections {nofile}; }}\n\
                 stream {{\n{sizes}  map $ssl_preread_server_name $up {{\n    hostnames;\n{deny}\
                 \x20   login.salesforce.com {backend};\n    *.my.salesforce.com {backend};\n    default {closed};\n  }}\n\
                 \x20 server {{\n    listen {addr}{reuseport};\n    ssl_preread on;\n    preread_timeout 10s;\n\
                 \x20   proxy_pass $up;\n    proxy_connect_timeout 5s;\n    proxy_timeout 600s;\n  }}\n}}\n"
            );
            let cfg_path = path("nginx.conf");
            std::fs::write(&cfg_path, cfg).unwrap();
            let args = ["-p".into(), format!("{d}/"), "-e".into(), path("nginx.log"), "-c".into(), cfg_path];
            Some(Launch { program, args: args.into() })
        }
        "sniproxy" => {
            let program = find_program(&["sniproxy"])?;
            let (ip, port) = (addr.ip(), addr.port());
            let (bip, bport) = (backend.ip(), backend.port());
            let (cip, cport) = (closed.ip(), closed.port());
            let mut table = String::with_capacity(site.deny.len() * 48);
            for name in site.deny {
                writeln!(table, "  (?i)^(.+\\.)?{}$ {cip} {cport}", name.replace('.', "\\.")).unwrap();
            }
            let cfg = format!(
                "error_log {{\n  filename /dev/null\n  priority emerg\n}}\n\
                 listener {ip} {port} {{\n  protocol tls\n  table allow\n}}\n\
                 table allow {{\n{table}  (?i)^login\\.salesforce\\.com$ {bip} {bport}\n  (?i)^.+\\.my\\.salesforce\\.com$ {bip} {bport}\n}}\n"
            );
            let cfg_path = path("sniproxy.conf");
            std::fs::write(&cfg_path, cfg).unwrap();
            Some(Launch { program, args: vec!["-f".into(), "-c".into(), cfg_path] })
        }
        other => panic!("unknown peer {other} (haproxy, haproxy-dom, nginx, sniproxy)"),
    }
}

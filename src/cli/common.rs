//! What the subcommands share: exit codes, argument parsers, and loading rules and lists.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::builder::PossibleValue;

use crate::config::{
    Config, HTTP_PORT, HTTPS_PORT, Keyword, ListenerConfig, LogFormat, LogLevel, Mode, ModeConfig, OpsFormat,
    RejectStyle,
};
use crate::policy::decide::RuleSet;
use crate::rules::file::{PRESET, RuleErrors, load_rules, preset_rules};
use crate::rules::list::{List, ListSpec, load_list};
use crate::rules::rule::{Rule, Verdict};

/// Exit code for invalid input (a bad hello, an invalid rules file).
pub const EXIT_INVALID: u8 = 1;
/// Exit code for a usage or configuration error (sysexits EX_USAGE).
pub const EXIT_USAGE: u8 = 64;
/// Exit code for an address that cannot be had: another process listens on it (EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Exit code for another error of the OS (EX_OSERR).
pub const EXIT_OSERR: u8 = 71;
/// Exit code for a permission the process lacks: a port below 1024 without
/// CAP_NET_BIND_SERVICE (EX_NOPERM).
pub const EXIT_NOPERM: u8 = 77;

/// `allow` or `deny`.
pub(super) fn parse_verdict(text: &str) -> Result<Verdict, String> {
    text.parse()
}

/// The configuration's keyword settings as flag values, spelled as in the file.
macro_rules! value_enum {
    ($($ty:ty),+) => {$(
        impl clap::ValueEnum for $ty {
            fn value_variants<'a>() -> &'a [Self] {
                <$ty as Keyword>::ALL
            }
            fn to_possible_value(&self) -> Option<PossibleValue> {
                Some(PossibleValue::new(self.as_str()))
            }
        }
    )+};
}

value_enum!(Mode, RejectStyle, LogFormat, LogLevel, OpsFormat);

/// `ACTION=PATH` → a list spec named after the file.
pub(super) fn parse_list_arg(arg: &str, lenient: bool) -> Result<(ListSpec, PathBuf), String> {
    let (action, path) = arg.split_once('=').ok_or_else(|| format!("--list {arg}: expected ACTION=PATH"))?;
    let verdict = parse_verdict(action).map_err(|e| format!("--list {arg}: {e}"))?;
    let path = PathBuf::from(path);
    let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    Ok((ListSpec { name, verdict, lenient }, path))
}

/// Large lists on the command line (the configuration file names them otherwise).
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// A large list tied to an action: `deny=blocklist.txt` (repeatable). Its ruleset name
    /// is the file name.
    #[arg(long = "list", value_name = "ACTION=PATH")]
    pub lists: Vec<String>,
    /// Skip and count malformed list lines instead of failing.
    #[arg(long)]
    pub lenient: bool,
}

/// The rules and lists of `snigate match` (and `hello`), compiled as they are read.
/// `Err(Ok(errors))`: invalid input; `Err(Err(message))`: a usage error.
pub(super) fn compile(
    paths: &[PathBuf],
    list_args: &ListArgs,
    default: Verdict,
) -> Result<RuleSet, Result<RuleErrors, String>> {
    let specs = list_specs(list_args).map_err(Err)?;
    let lists: Vec<_> = specs.iter().map(|(spec, path)| (spec.clone(), path.as_path())).collect();
    RuleSet::load((!paths.is_empty()).then_some(paths), &lists, default).map_err(Ok)
}

/// The `--list ACTION=PATH` arguments as list specs.
pub(super) fn list_specs(list_args: &ListArgs) -> Result<Vec<(ListSpec, PathBuf)>, String> {
    list_args.lists.iter().map(|a| parse_list_arg(a, list_args.lenient)).collect()
}

/// Everything `check` loads, with every error of every file and list.
pub(super) struct Loaded {
    pub rules: Vec<Rule>,
    pub lists: Vec<List>,
    /// What was loaded, for the report.
    pub sources: Vec<String>,
}

/// Every error of every file and list, when there is one.
pub(super) fn load(paths: &[PathBuf], specs: &[(ListSpec, PathBuf)]) -> Result<Loaded, RuleErrors> {
    let mut errors = Vec::new();
    let (rules, mut sources): (Vec<Rule>, Vec<String>) = if paths.is_empty() {
        let names = PRESET.iter().map(|(name, _)| format!("{name} (embedded)")).collect();
        (
            preset_rules().unwrap_or_else(|e| {
                errors.extend(e.0);
                Vec::new()
            }),
            names,
        )
    } else {
        let names = paths.iter().map(|p| p.display().to_string()).collect();
        (
            load_rules(paths).unwrap_or_else(|e| {
                errors.extend(e.0);
                Vec::new()
            }),
            names,
        )
    };
    let mut lists = Vec::new();
    for (spec, path) in specs {
        sources.push(format!("{} ({} list)", path.display(), spec.verdict));
        match load_list(spec, path) {
            Ok(list) => lists.push(list),
            Err(e) => errors.extend(e.0),
        }
    }
    if errors.is_empty() { Ok(Loaded { rules, lists, sources }) } else { Err(RuleErrors(errors)) }
}

/// A configured listener as `match` and `hello --config` decide with it: the configuration's
/// rules (its default, `no_sni` and lists), and the listener's mode and ports.
pub(super) struct Configured {
    /// The whole configuration.
    pub config: Config,
    /// The listener decided for.
    pub listener: ListenerConfig,
    /// Its place among the configuration's listeners (what its report scope is kept by).
    pub index: usize,
    /// The configuration's rules, compiled as the listener runs them.
    pub rules: RuleSet,
}

/// [`configured`] for a command's `--config` and `--listener`, if given: `Err` is the exit
/// code, once the error is printed with `command`'s name.
pub(super) fn configured_for(
    command: &str,
    config: Option<&Path>,
    listener: Option<&str>,
) -> Result<Option<Configured>, std::process::ExitCode> {
    let Some(path) = config else { return Ok(None) };
    configured(path, listener).map(Some).map_err(|(code, e)| {
        eprintln!("snigate {command}: {e}");
        std::process::ExitCode::from(code)
    })
}

/// Loads `path` and its rules, for the listener named `name` (None: the first). The error is
/// the exit code and the message.
pub(super) fn configured(path: &Path, name: Option<&str>) -> Result<Configured, (u8, String)> {
    let config = Config::load(path).map_err(|e| (EXIT_USAGE, e.to_string()))?;
    let found = match name {
        None => config.listeners.first().map(|l| (0, l.get_ref().clone())),
        Some(name) => config
            .listeners
            .iter()
            .map(|l| l.get_ref())
            .enumerate()
            .find(|(_, l)| l.label() == name)
            .map(|(i, l)| (i, l.clone())),
    };
    let Some((index, listener)) = found else {
        let names: Vec<String> = config.listeners.iter().map(|l| l.get_ref().label()).collect();
        return Err((
            EXIT_USAGE,
            format!("no listener {:?} in {} (it has {})", name.unwrap_or(""), path.display(), names.join(", ")),
        ));
    };
    let rules = config.compile_rules().map_err(|e| (EXIT_INVALID, format!("invalid rules:\n{e}")))?;
    Ok(Configured { config, listener, index, rules })
}

impl Configured {
    /// The destination and port the listener decides a connection with, as its mode gives
    /// them: `dst` and `port` stand for what the client asks (the original destination, the
    /// CONNECT or request port). `Err`: the listener refuses the port before any rule
    /// (`dst_denied`), and why. `named`: the client names a host (an SNI, a CONNECT or request
    /// host), which the explicit modes then reach by name.
    pub fn ask(
        &self,
        named: bool,
        dst: Option<SocketAddr>,
        port: Option<u16>,
    ) -> Result<(Option<SocketAddr>, u16), String> {
        let asked = port.or(dst.map(|d| d.port()).filter(|&p| p != 0));
        match &self.listener.mode {
            ModeConfig::Sni { upstream_port } => Ok((None, upstream_port.unwrap_or(self.listener.listen.port()))),
            ModeConfig::Upstream { upstream } => {
                let addr = std::net::ToSocketAddrs::to_socket_addrs(upstream.as_str())
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| format!("upstream {upstream} does not resolve"))?;
                Ok((Some(addr), addr.port()))
            }
            ModeConfig::Transparent { .. } => Ok((dst, asked.unwrap_or(0))),
            ModeConfig::Connect { .. } | ModeConfig::Http { .. } => {
                let default = if self.listener.mode.mode() == Mode::Http { HTTP_PORT } else { HTTPS_PORT };
                let port = asked.unwrap_or(default);
                let ports = self.config.destination_ports(&self.listener);
                if !ports.contains(&port) {
                    let allowed: Vec<String> = ports.iter().map(u16::to_string).collect();
                    return Err(format!("port {port} is not among this listener's ports ({})", allowed.join(", ")));
                }
                Ok((dst.filter(|_| !named).map(|d| SocketAddr::new(d.ip(), port)), port))
            }
        }
    }
}

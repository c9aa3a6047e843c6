//! Reloads: on SIGHUP and when a rule file, list or credentials file changes on disk.
//!
//! A reload compiles a new snapshot off the accept path (on a blocking thread) and swaps it in
//! whole; connections already open keep the snapshot they were decided with. A reload that
//! fails keeps the running rules and logs every error with its file, line and reason. The
//! `connect` listeners' credentials files are read again at the same time, so that revoking a
//! user needs no restart.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::{Config, ConfigError, Credentials};
use crate::metrics::registry::Metrics;
use crate::policy::decide::Rules;
use crate::proxy::listener::SharedCredentials;
use crate::rules::file::RuleErrors;

/// Quiet time after the last file event before reloading: editors and ConfigMap updates
/// touch several files in a burst.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// Compiles the configured rules and swaps them in; on failure the running rules stay.
/// Either way `metrics` counts the reload. Returns the new rule count.
pub async fn reload_rules(config: &Config, rules: &Rules, metrics: &Metrics) -> Result<usize, RuleErrors> {
    let config = config.clone();
    let compiled = tokio::task::spawn_blocking(move || config.compile_rules())
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    match compiled {
        Ok(new) => {
            let n = new.len();
            metrics.rules_loaded(&new);
            metrics.reloaded(true);
            rules.store(Arc::new(new));
            tracing::info!(rules = n, "rules reloaded");
            Ok(n)
        }
        Err(errors) => {
            metrics.reloaded(false);
            for e in &errors.0 {
                tracing::error!(error = %e, "rules reload failed; keeping the running rules");
            }
            Err(errors)
        }
    }
}

/// Reads every credentials file again and swaps in those that parse; a file that does not
/// keeps its running credentials, and each error is returned (and logged).
pub fn reload_credentials(credentials: &[SharedCredentials]) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    for slot in credentials {
        let path = slot.load().path.clone();
        match Credentials::load(&path) {
            Ok(fresh) => slot.store(Arc::new(fresh)),
            Err(e) => {
                tracing::error!(error = %e, "credentials reload failed; keeping the running credentials");
                errors.push(e);
            }
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// Why a reload was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadTrigger {
    /// SIGHUP.
    Signal,
    /// A watched rule file or list changed.
    FileChange,
}

/// The directories to watch for `config`'s rule files and lists: a directory given as a rule
/// path, and the parent of every file. Watching parents also sees files replaced by rename
/// (editors) or by a symlink swap (Kubernetes ConfigMaps).
pub fn watched_dirs(config: &Config) -> BTreeSet<PathBuf> {
    in_use(config).map(|p| if p.is_dir() { p.clone() } else { parent(p) }).collect()
}

fn parent(p: &Path) -> PathBuf {
    match p.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Starts a watcher on `config`'s rule paths; every burst of changes sends one
/// [`ReloadTrigger::FileChange`] on `tx` after [`DEBOUNCE`]. Keep the returned watcher alive.
pub fn watch_rules(
    config: &Config,
    tx: mpsc::Sender<ReloadTrigger>,
) -> notify::Result<Option<notify::RecommendedWatcher>> {
    let dirs = watched_dirs(config);
    if dirs.is_empty() {
        return Ok(None);
    }
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let in_use = InUse::of(config);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| in_use.touched_by(&e)) {
            let _ = events_tx.send(());
        }
    })?;
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    tokio::spawn(async move {
        while events.recv().await.is_some() {
            // Debounce: wait until the burst has been quiet for DEBOUNCE.
            while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, events.recv()).await {}
            if tx.send(ReloadTrigger::FileChange).await.is_err() {
                return;
            }
        }
    });
    Ok(Some(watcher))
}

/// The paths a reload reads: rule files and directories, lists, credentials files.
fn in_use(config: &Config) -> impl Iterator<Item = &PathBuf> {
    let files = config.rules.files.iter().flatten();
    let lists = config.rules.lists.iter().map(|l| &l.path);
    let credentials = config.listeners.iter().filter_map(|l| l.get_ref().credentials.as_ref()).map(|c| &c.path);
    files.chain(lists).chain(credentials)
}

/// The files a configuration's rules come from, to tell their changes from those of other
/// files in the same directories (a log written there must not recompile the rules).
struct InUse {
    /// Rule files and lists named one by one, as the watcher reports them (watched directory
    /// joined with the file name).
    files: BTreeSet<PathBuf>,
    /// Directories whose `*.rules` files are loaded.
    dirs: BTreeSet<PathBuf>,
}

impl InUse {
    fn of(config: &Config) -> InUse {
        let (dirs, files): (Vec<&PathBuf>, Vec<&PathBuf>) = in_use(config).partition(|p| p.is_dir());
        InUse {
            files: files.into_iter().filter_map(|p| Some(parent(p).join(p.file_name()?))).collect(),
            dirs: dirs.into_iter().cloned().collect(),
        }
    }

    /// Whether `event` changes a file in use: created, written (and closed), removed or renamed,
    /// or a Kubernetes ConfigMap's `..data` symlink swapped under it.
    fn touched_by(&self, event: &notify::Event) -> bool {
        use notify::EventKind;
        use notify::event::{AccessKind, AccessMode};
        let changes = match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            kind => !kind.is_access(),
        };
        changes && event.paths.iter().any(|p| self.holds(p))
    }

    fn holds(&self, path: &Path) -> bool {
        let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
        self.files.contains(path)
            || name.starts_with("..data")
            || (path.extension().is_some_and(|e| e == "rules") && path.parent().is_some_and(|d| self.dirs.contains(d)))
    }
}

/// Reloads the rules and the credentials on SIGHUP and when their files change, until the
/// process ends. On SIGHUP the configuration is read again with `reread` first: its rule
/// settings apply, `apply` takes what else can change in place (limits, the log's denial rate),
/// and what only a new process can apply is named in the log (a handover, SIGUSR2, applies it);
/// a configuration that does not validate keeps the running one.
pub async fn run(
    mut config: Config,
    rules: Rules,
    credentials: Vec<SharedCredentials>,
    metrics: Arc<Metrics>,
    reread: impl Fn() -> Result<Config, Vec<ConfigError>> + Send + 'static,
    apply: impl Fn(&Config) + Send + 'static,
) {
    let (tx, mut triggers) = mpsc::channel(4);
    let _watcher = match watch_rules(&config, tx.clone()) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the rule files; reload with SIGHUP");
            None
        }
    };
    if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                if tx.send(ReloadTrigger::Signal).await.is_err() {
                    return;
                }
            }
        });
    }
    while let Some(trigger) = triggers.recv().await {
        // Triggers that queued up meanwhile are served by this one reload.
        while triggers.try_recv().is_ok() {}
        tracing::info!(?trigger, "reloading rules");
        if trigger == ReloadTrigger::Signal {
            match reread() {
                Ok(fresh) => {
                    for section in config.needs_handover(&fresh) {
                        tracing::warn!(section, "changed in the configuration; a handover (SIGUSR2) applies it");
                    }
                    apply(&fresh);
                    config.rules = fresh.rules;
                    config.limits = fresh.limits;
                    config.log.deny_lines_per_second = fresh.log.deny_lines_per_second;
                }
                Err(errors) => {
                    for e in errors {
                        tracing::error!(error = %e, "configuration reload failed; keeping the running configuration");
                    }
                }
            }
        }
        let _ = reload_rules(&config, &rules, &metrics).await;
        let _ = reload_credentials(&credentials);
    }
}

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

use crate::config::{Config, ConfigError, Credentials, Keyword, ModeConfig};
use crate::metrics::registry::Metrics;
use crate::phase::{Phase, Phases};
use crate::policy::decide::RuleSet;
use crate::proxy::live::Live;
use crate::proxy::server::LiveSettings;
use crate::rules::file::RuleErrors;

/// Quiet time after the last file event before reloading: editors and ConfigMap updates
/// touch several files in a burst.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// Compiles the configured rules and swaps them into the live settings; on failure the running
/// rules stay. Either way `metrics` counts the reload. Returns the new rule count.
///
/// When every rule file and list holds the bytes it held and the settings are the same, the
/// running snapshot is kept as it is: nothing is compiled, so a reload for another reason (a
/// limit, a report scope, an unchanged file touched) costs no second copy of a large ruleset.
pub async fn reload_rules(config: &Config, live: &LiveSettings, metrics: &Metrics) -> Result<usize, RuleErrors> {
    let config = config.clone();
    let running = live.load().fingerprint.clone();
    let compiled = tokio::task::spawn_blocking(move || -> Result<_, RuleErrors> {
        let fingerprint = config.fingerprint();
        if fingerprint.same_snapshot(&running) {
            return Ok(None);
        }
        Ok(Some((config.compile_rules()?, fingerprint)))
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    match compiled {
        Ok(None) => {
            metrics.reloaded(true);
            let running = live.load();
            let n = running.rules.len();
            tracing::info!(rules = n, sha256 = %running.fingerprint.sha256, unchanged = true, "rules reloaded");
            Ok(n)
        }
        Ok(Some((new, fingerprint))) => {
            let n = new.len();
            metrics.rules_loaded(&new);
            let new = Arc::new(new);
            let usage = metrics.rule_usage(&new);
            metrics.rules_identity(&fingerprint.sha256);
            metrics.reloaded(true);
            let running = live.load();
            let large = |file: &str| (hashes(&new, file), hashes(&running.rules, file));
            for change in fingerprint.changes_from(&running.fingerprint, large) {
                // The first few rules of each side: enough to recognise the edit.
                let (added, removed) = change.counts;
                let first = |rules: &[String]| rules.iter().take(5).cloned().collect::<Vec<_>>().join("; ");
                let (adds, removes) = (first(&change.added), first(&change.removed));
                tracing::info!(file = %change.file, added, removed, adds, removes, "rules changed");
            }
            let fingerprint = Arc::new(fingerprint);
            live.update(|running| Live { rules: new, usage, fingerprint: fingerprint.clone(), ..running.clone() });
            tracing::info!(rules = n, sha256 = %fingerprint.sha256, "rules reloaded");
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

/// The sorted, distinct hashes of the rules `set` holds from `file`.
fn hashes(set: &RuleSet, file: &str) -> Vec<u64> {
    let mut h: Vec<u64> = set.rules().filter(|r| r.ruleset() == file).filter_map(|r| r.text_hash()).collect();
    h.sort_unstable();
    h.dedup();
    h
}

/// Reads every credentials file `config` names again and swaps in those that parse; a file that
/// does not keeps its listener's running credentials, and each error is returned (and logged).
pub fn reload_credentials(config: &Config, live: &LiveSettings) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    let running = live.load();
    let mut credentials = running.credentials.clone();
    for (slot, l) in credentials.iter_mut().zip(&config.listeners) {
        let Some(path) = l.get_ref().mode.credentials().map(|c| c.path.clone()) else { continue };
        match Credentials::load(&path) {
            Ok(fresh) => *slot = Some(Arc::new(fresh)),
            Err(e) => {
                tracing::error!(error = %e, "credentials reload failed; keeping the running credentials");
                errors.push(e);
            }
        }
    }
    drop(running);
    live.update(|running| Live { credentials, ..running.clone() });
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
    let credentials = config.listeners.iter().filter_map(|l| l.get_ref().mode.credentials()).map(|c| &c.path);
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

/// Reloads the live settings on every trigger until the triggers end: `triggers` carries the
/// lifecycle's SIGHUPs and the changes `watcher` (from [`watch_rules`]) sees. On a
/// signal the configuration is read again with `reread` first: what it changes in place is
/// swapped in, and what only a new process can apply is named in the log (a handover, SIGUSR2,
/// applies it); a configuration that does not validate keeps the running one. The phase is
/// `Reloading` while a reload runs.
pub async fn run(
    mut config: Config,
    live: LiveSettings,
    metrics: Arc<Metrics>,
    phases: Phases,
    (watcher, mut triggers): (Option<notify::RecommendedWatcher>, mpsc::Receiver<ReloadTrigger>),
    reread: impl Fn() -> Result<Config, Vec<ConfigError>> + Send + 'static,
) {
    // Kept for as long as reloads run.
    let _watcher = watcher;
    while let Some(trigger) = triggers.recv().await {
        // Triggers that queued up meanwhile are served by this one reload.
        while triggers.try_recv().is_ok() {}
        let before = phases.current();
        phases.set(Phase::Reloading);
        tracing::info!(?trigger, "reloading");
        if trigger == ReloadTrigger::Signal {
            match reread() {
                Ok(fresh) => {
                    for section in config.needs_handover(&fresh) {
                        tracing::warn!(section, "changed in the configuration; a handover (SIGUSR2) applies it");
                    }
                    for (setting, was, now) in [
                        ("default", config.rules.default.as_str(), fresh.rules.default.as_str()),
                        ("no_sni", config.rules.no_sni.as_str(), fresh.rules.no_sni.as_str()),
                    ] {
                        if was != now {
                            tracing::info!(setting, was, now, "[rules] changed");
                        }
                    }
                    live.update(|running| Live {
                        credentials: running.credentials.clone(),
                        ..Live::new(&fresh, running.rules.clone(), running.usage.clone(), running.fingerprint.clone())
                    });
                    metrics.report_scopes(&fresh);
                    config.rules = fresh.rules;
                    config.limits = fresh.limits;
                    config.report = fresh.report;
                    config.log.deny_lines_per_second = fresh.log.deny_lines_per_second;
                    for (running, fresh) in config.listeners.iter_mut().zip(fresh.listeners) {
                        running.get_mut().enforce = fresh.get_ref().enforce;
                        if let (ModeConfig::Connect { credentials, .. }, ModeConfig::Connect { credentials: new, .. }) =
                            (&mut running.get_mut().mode, fresh.into_inner().mode)
                        {
                            *credentials = new;
                        }
                    }
                }
                Err(errors) => {
                    for e in errors {
                        tracing::error!(error = %e, "configuration reload failed; keeping the running configuration");
                    }
                }
            }
        }
        let _ = reload_rules(&config, &live, &metrics).await;
        let _ = reload_credentials(&config, &live);
        phases.set(before);
    }
}

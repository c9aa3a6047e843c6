//! Rule reloads: on SIGHUP and when a rule file or list changes on disk.
//!
//! A reload compiles a new snapshot off the accept path (on a blocking thread) and swaps it in
//! whole; connections already open keep the snapshot they were decided with. A reload that
//! fails keeps the running rules and logs every error with its file, line and reason.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::metrics::registry::Metrics;
use crate::policy::decide::Rules;
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
    let files = config.rules.files.iter().flatten();
    let lists = config.rules.lists.iter().map(|l| &l.path);
    files.chain(lists).map(|p| if p.is_dir() { p.clone() } else { parent(p) }).collect()
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
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
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

/// Reloads on SIGHUP and on rule-file changes until the process ends.
pub async fn run(config: Config, rules: Rules, metrics: Arc<Metrics>) {
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
        tracing::info!(?trigger, "reloading rules");
        let _ = reload_rules(&config, &rules, &metrics).await;
    }
}

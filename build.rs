//! Build facts for `snigate --version`: the commit, when built from a git checkout ("unknown"
//! otherwise: a source tarball or a build without git must still build), and the build date.

// The crate's own date arithmetic, the same file.
#[allow(dead_code)]
#[path = "src/date.rs"]
mod date;

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    let git = |args: &[&str]| {
        let out = Command::new("git").args(args).output().ok().filter(|o| o.status.success())?;
        let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (!text.is_empty()).then_some(text)
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SNIGATE_COMMIT={commit}");
    // Built again when HEAD moves; paths that do not exist are left out, else cargo would run
    // this script on every build.
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    watched.extend(git(&["rev-parse", "--symbolic-full-name", "HEAD"]));
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name]).filter(|p| Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    // SOURCE_DATE_EPOCH: reproducible builds pin the date.
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
    let (y, m, d) = date::civil_from_days((secs / 86_400) as i64);
    println!("cargo:rustc-env=SNIGATE_BUILD_DATE={y:04}-{m:02}-{d:02}");
}

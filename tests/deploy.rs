//! The deployment kit's nftables rule sets are valid for the kernel's nftables (`nft -c`),
//! checked inside a network namespace this test creates and removes.

use std::process::Command;

#[test]
fn nftables_rule_sets_check() {
    let ns = format!("sgdeploy-{}", std::process::id());
    if !Command::new("ip").args(["netns", "add", &ns]).status().is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED: checking nftables rule sets needs root and iproute2 (ip netns add failed)");
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nftables");
    let mut checked = 0;
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "nft") {
            match Command::new("ip").args(["netns", "exec", &ns, "nft", "-c", "-f"]).arg(&path).output() {
                Ok(out) if out.status.success() => checked += 1,
                Ok(out) => failures.push(format!("{}: {}", path.display(), String::from_utf8_lossy(&out.stderr))),
                Err(e) => failures.push(format!("nft: {e}")),
            }
        }
    }
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(checked >= 2, "expected the local-egress and gateway rule sets, checked {checked}");
}

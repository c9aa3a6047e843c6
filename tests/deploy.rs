//! The deployment kit's nftables rule sets are valid for the kernel's nftables (`nft -c`), as
//! shipped (QUIC dropped) and with QUIC sent to its listener, and so are the rules
//! `tproxy.sh` generates; checked inside a network namespace this test creates and removes.

use std::process::{Command, Stdio};

#[test]
fn nftables_rule_sets_check() {
    let ns = format!("sgdeploy-{}", std::process::id());
    if !Command::new("ip").args(["netns", "add", &ns]).status().is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED: checking nftables rule sets needs root and iproute2 (ip netns add failed)");
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nftables");
    let scratch = tempfile::tempdir().unwrap();
    let mut checked = 0;
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "nft") {
            let text = std::fs::read_to_string(&path).unwrap();
            let shipped = "define QUIC = \"quic_drop\"";
            if !text.contains(shipped) {
                failures.push(format!("{}: no `{shipped}`", path.display()));
                continue;
            }
            let quic = scratch.path().join(path.file_name().unwrap());
            std::fs::write(&quic, text.replace(shipped, "define QUIC = \"quic_tproxy\"")).unwrap();
            for file in [&path, &quic] {
                let mut nft = Command::new("ip");
                nft.args(["netns", "exec", &ns, "nft", "-c", "-f"]).arg(file);
                checked += passes(&file.display().to_string(), &mut nft, &mut failures) as usize;
            }
        }
    }
    let variants: [&[&str]; 2] = [&["check"], &["check", "15002", "0x1", "15443"]];
    for args in variants {
        let mut tproxy = Command::new("ip");
        tproxy.args(["netns", "exec", &ns, "sh"]).arg(dir.join("tproxy.sh")).args(args);
        checked += passes(&format!("tproxy.sh {}", args.join(" ")), &mut tproxy, &mut failures) as usize;
    }
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(checked >= 6, "expected local-egress and gateway (QUIC off and on) and tproxy.sh's two, checked {checked}");
}

/// Runs `cmd`; when it fails, says so in `failures`, with its standard error.
fn passes(what: &str, cmd: &mut Command, failures: &mut Vec<String>) -> bool {
    match cmd.output() {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            failures.push(format!("{what}: {}", String::from_utf8_lossy(&out.stderr)));
            false
        }
        Err(e) => {
            failures.push(format!("{what}: {e}"));
            false
        }
    }
}

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The systemd units (the service and its socket) pass `systemd-analyze verify` (with
/// ExecStart pointed at this build).
#[test]
fn systemd_unit_verifies() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("SKIPPED: systemd-analyze is not installed");
        return;
    }
    let unit = std::fs::read_to_string(format!("{ROOT}/deploy/systemd/snigate.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/snigate run"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snigate.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/snigate", env!("CARGO_BIN_EXE_snigate"))).unwrap();
    let socket = dir.path().join("snigate.socket");
    std::fs::copy(format!("{ROOT}/deploy/systemd/snigate.socket"), &socket).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).arg(&socket).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

/// The Kubernetes manifests validate against the Kubernetes OpenAPI schemas
/// (`kubernetes-validate`, from PyPI; the Prometheus Operator CRDs have no schema there and
/// are only parsed).
#[test]
fn kubernetes_manifests_validate() {
    let dir = format!("{ROOT}/deploy/kubernetes");
    let files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(".yaml"))
        .collect();
    assert!(files.len() >= 5, "{files:?}");
    match Command::new("kubernetes-validate").arg("--strict").args(&files).output() {
        Err(_) => eprintln!("SKIPPED: kubernetes-validate is not installed (pip install kubernetes-validate)"),
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{text}");
            let unknown: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("Couldn't find schema"))
                .filter(|l| !l.contains("monitoring.coreos.com"))
                .collect();
            assert!(unknown.is_empty(), "{unknown:?}");
        }
    }
}

/// The DaemonSet carries the same nftables table as deploy/nftables/local-egress.nft.
#[test]
fn daemonset_nftables_match_the_shipped_table() {
    let nft = std::fs::read_to_string(format!("{ROOT}/deploy/nftables/local-egress.nft")).unwrap();
    let ds = std::fs::read_to_string(format!("{ROOT}/deploy/kubernetes/daemonset.yaml")).unwrap();
    let embedded = ds.split("  local-egress.nft: |\n").nth(1).expect("the snigate-nftables ConfigMap");
    let unindented: String =
        embedded.lines().map(|l| l.strip_prefix("    ").unwrap_or(l)).collect::<Vec<_>>().join("\n") + "\n";
    assert_eq!(unindented.trim_end(), nft.trim_end());
}

/// `deploy/container/build-static.sh` (what the Dockerfile runs) produces a binary with no
/// dynamic dependencies, and it runs.
#[test]
fn static_binary_has_no_dynamic_dependencies() {
    let target_dir = format!("{ROOT}/target/static-build");
    let out = format!("{target_dir}/snigate");
    let build = Command::new("sh")
        .arg(format!("{ROOT}/deploy/container/build-static.sh"))
        .arg(&out)
        .env("CARGO_TARGET_DIR", &target_dir)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&build.stderr);
    if build.status.code() == Some(69) {
        eprintln!("SKIPPED: the musl target or musl-gcc cannot be installed here: {log}");
        return;
    }
    assert!(build.status.success(), "{log}");
    let file = Command::new("file").arg(&out).output().unwrap();
    let described = String::from_utf8_lossy(&file.stdout);
    assert!(described.contains("statically linked") || described.contains("static-pie linked"), "{described}");
    let ldd = Command::new("ldd").arg(&out).output().unwrap();
    let ldd_text = String::from_utf8_lossy(&ldd.stdout).into_owned() + &String::from_utf8_lossy(&ldd.stderr);
    assert!(!ldd_text.contains("=>"), "ldd lists libraries: {ldd_text}");
    let hello =
        Command::new(&out).args(["hello", "--json", &format!("{ROOT}/tests/data/hellos/curl.bin")]).output().unwrap();
    assert!(String::from_utf8_lossy(&hello.stdout).contains("acme--uat.sandbox.my.salesforce.com"));
}

/// The Prometheus alert rules pass `promtool check rules` and their unit tests.
#[test]
fn prometheus_alerts_check_and_pass_their_tests() {
    let dir = format!("{ROOT}/deploy/prometheus");
    let Ok(check) = Command::new("promtool").args(["check", "rules", "alerts.yml"]).current_dir(&dir).output() else {
        eprintln!("SKIPPED: promtool is not installed (Debian package prometheus)");
        return;
    };
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let test = Command::new("promtool").args(["test", "rules", "alerts.test.yml"]).current_dir(&dir).output().unwrap();
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
}

/// Every metric the alert rules and the Grafana dashboard use is one snigate exposes.
#[test]
fn alerts_and_dashboard_use_only_exposed_metrics() {
    let metrics = snigate::Metrics::new();
    let _listener = metrics.listener("egress", 10);
    metrics.rules_loaded(&snigate::RuleSet::new(snigate::preset_rules().unwrap(), Vec::new(), snigate::Verdict::Deny));
    // The report scopes' series exist once a server reports its configuration's scopes.
    let scoped = "[[listener]]\nname = \"egress\"\nlisten = \"127.0.0.1:9443\"\nmode = \"sni\"\n\
                  enforce = \"report\"\nreport_until = \"2099-12-31\"\n";
    metrics.report_scopes(&snigate::Config::parse("report.toml", scoped).unwrap());
    let exposed: std::collections::BTreeSet<String> = metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("# TYPE "))
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect();
    assert!(exposed.contains("snigate_connections_total"), "{exposed:?}");
    for file in ["deploy/prometheus/alerts.yml", "deploy/grafana/snigate.json"] {
        let text = std::fs::read_to_string(format!("{ROOT}/{file}")).unwrap();
        let used = metric_names(&text);
        assert!(!used.is_empty(), "{file} uses no metrics?");
        for name in used {
            let base = name.strip_suffix("_bucket").unwrap_or(&name);
            assert!(exposed.contains(base), "{file} uses {name}, which snigate does not expose");
        }
    }
}

/// Words that look like snigate or process metric names.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("snigate_") || w.starts_with("process_"))
        .map(str::to_string)
        .collect()
}

/// The configurations the Kubernetes ConfigMaps carry are valid, are mounted as directories
/// (an edit of a `subPath` mount never reaches a running pod), and the containers read them
/// where they are mounted; the grace period covers the shutdown delay and the drain.
#[test]
fn kubernetes_configurations_are_valid_and_reach_the_pods() {
    for (manifest, key, block) in [
        ("configmap.yaml", "snigate.toml", "deployment.yaml"),
        ("daemonset.yaml", "snigate-node.toml", "daemonset.yaml"),
    ] {
        let text = std::fs::read_to_string(format!("{ROOT}/deploy/kubernetes/{manifest}")).unwrap();
        let embedded = text.split(&format!("  {key}: |\n")).nth(1).expect("the embedded configuration");
        let config: String = embedded
            .lines()
            .take_while(|l| l.starts_with("    ") || l.is_empty())
            .map(|l| l.strip_prefix("    ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let parsed = snigate::Config::parse(key, &config).unwrap_or_else(|e| panic!("{manifest} {key}: {e}"));
        let workload = std::fs::read_to_string(format!("{ROOT}/deploy/kubernetes/{block}")).unwrap();
        assert!(!workload.contains("subPath"), "{block} mounts a configuration with subPath");
        assert!(workload.contains("\"--config\", \"/etc/snigate/config/snigate.toml\""), "{block}");
        let grace: f64 = workload
            .lines()
            .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds:"))
            .expect("a grace period")
            .trim()
            .parse()
            .unwrap();
        let needed = parsed.runtime.shutdown_delay + parsed.limits.drain_timeout;
        assert!(grace > needed, "{block}: {grace} s of grace for {needed} s of delay and drain");
    }
}

/// The single-machine recipe of docs/deploy.md works as written: its commands (but for
/// building the static binary, `systemctl` and `nft`, which change this machine) run against a
/// directory of the test's own standing in for `/etc/snigate`, and the unit's own command line
/// then starts snigate on what they installed, in network and PID namespaces of its own (so
/// that stopping the namespace stops every process of it).
#[test]
fn the_single_machine_recipe_runs() {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if !root {
        assert!(std::env::var_os("CI").is_none(), "the recipe test needs root, and CI runs as root");
        return eprintln!("SKIPPED: the recipe test needs root (a network namespace, SO_MARK)");
    }
    let doc = std::fs::read_to_string(format!("{ROOT}/docs/deploy.md")).unwrap();
    let section = doc.split("## Transparent egress on one Linux box").nth(1).unwrap();
    let block = section.split("```sh\n").nth(1).unwrap().split("```").next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc/snigate");
    let bin = env!("CARGO_BIN_EXE_snigate");
    let local =
        |line: &str| line.replace("/etc/snigate", &etc.display().to_string()).replace("/usr/local/bin/snigate", bin);
    let mut ran = 0;
    for line in block.lines().map(|l| l.split(" # ").next().unwrap().trim()) {
        let machine_wide = ["deploy/container/build-static.sh", "cp deploy/systemd", "nft "];
        if line.is_empty() || machine_wide.iter().any(|m| line.starts_with(m)) {
            continue;
        }
        let out = Command::new("sh").arg("-c").arg(local(line)).current_dir(ROOT).output().unwrap();
        assert!(out.status.success(), "{line}: {}", String::from_utf8_lossy(&out.stderr));
        ran += 1;
    }
    assert!(ran >= 2, "the recipe's install and check ran");
    let unit = std::fs::read_to_string(format!("{ROOT}/deploy/systemd/snigate.service")).unwrap();
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart");
    let script = format!("ip link set lo up && exec {}", local(exec));
    let mut child = Command::new("unshare")
        .args(["--net", "--pid", "--fork", "--kill-child", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    for line in std::io::BufRead::lines(stderr) {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.contains("listening") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let listening = seen.iter().find(|l| l.contains("listening")).unwrap_or_else(|| panic!("{seen:#?}"));
    assert!(listening.contains("127.0.0.1:15001") && listening.contains("transparent"), "{listening}");
}

/// The container's build stage copies everything the crate builds from (a build script that is
/// not copied fails the image's build, and `docker build` is not run here), and the image ships
/// the shell completions and the man page.
#[test]
fn the_container_build_copies_what_the_crate_builds_from() {
    let dockerfile = std::fs::read_to_string(format!("{ROOT}/deploy/container/Dockerfile")).unwrap();
    let copied: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
        .flat_map(|l| l.split_whitespace().rev().skip(1))
        .collect();
    for needed in ["Cargo.toml", "Cargo.lock", "build.rs", "src", "rules", "deploy", "tests", "benches"] {
        let exists = std::path::Path::new(&format!("{ROOT}/{needed}")).exists();
        assert!(!exists || copied.contains(&needed), "the build stage does not copy {needed}: {copied:?}");
    }
    for shipped in ["completions bash", "man >", "/usr/share/man/man1/snigate.1", "bash-completion/completions/snigate"]
    {
        assert!(dockerfile.contains(shipped), "{shipped}");
    }
}

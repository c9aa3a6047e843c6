//! Network namespaces for the tests that build their own networks (transparent mode, the bypass
//! matrix), and the commands that set them up.
#![allow(dead_code)]

use std::process::Command;

/// The namespaces of one test run; removed on drop, whatever happened.
pub struct Namespaces(pub Vec<String>);

impl Namespaces {
    /// Adds namespace `name` (loopback up), to be removed with the others.
    pub fn add(&mut self, name: &str) -> Result<(), String> {
        run(&["ip", "netns", "add", name])?;
        self.0.push(name.to_string());
        run(&["ip", "-n", name, "link", "set", "lo", "up"])
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// One subnet of a [`line`]: `prefix` followed by a host number and `/len` is an address.
pub struct Subnet<'a> {
    pub prefix: &'a str,
    pub len: u8,
}

impl Subnet<'_> {
    fn host(&self, n: u8) -> String {
        format!("{}{n}/{}", self.prefix, self.len)
    }

    fn is_v6(&self) -> bool {
        self.prefix.contains(':')
    }
}

/// Three namespaces in a line, named `{stem}c-{tag}`, `{stem}g-{tag}` and `{stem}r-{tag}`:
/// client — gateway — remote, veth `c0`–`g0` on each `near` subnet and `g1`–`r0` on each `far`
/// one (the gateway is host 1 on both, the client and the remote host 2), links up, the client
/// and the remote routed through the gateway, which forwards. With IPv6 subnets, duplicate
/// address detection is off, so that addresses are usable at once.
pub fn line(stem: &str, tag: &str, near: &[Subnet], far: &[Subnet]) -> Result<(Namespaces, [String; 3]), String> {
    let names = [format!("{stem}c-{tag}"), format!("{stem}g-{tag}"), format!("{stem}r-{tag}")];
    let [c, g, r] = &names;
    let v6 = near.iter().chain(far).any(Subnet::is_v6);
    let mut guard = Namespaces(Vec::new());
    for ns in &names {
        guard.add(ns)?;
        if v6 {
            run(&["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"])?;
            run(&["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0"])?;
        }
    }
    run(&["ip", "-n", c, "link", "add", "c0", "type", "veth", "peer", "name", "g0", "netns", g])?;
    run(&["ip", "-n", g, "link", "add", "g1", "type", "veth", "peer", "name", "r0", "netns", r])?;
    for (subnets, (a, a_dev), (b, b_dev)) in [(near, (c, "c0"), (g, "g0")), (far, (r, "r0"), (g, "g1"))] {
        for net in subnets {
            run(&["ip", "-n", a, "addr", "add", &net.host(2), "dev", a_dev])?;
            run(&["ip", "-n", b, "addr", "add", &net.host(1), "dev", b_dev])?;
            let family = if net.is_v6() { "-6" } else { "-4" };
            let via = format!("{}1", net.prefix);
            run(&["ip", "-n", a, "link", "set", a_dev, "up"])?;
            run(&["ip", "-n", b, "link", "set", b_dev, "up"])?;
            run(&["ip", "-n", a, family, "route", "add", "default", "via", &via])?;
        }
    }
    run(&["ip", "netns", "exec", g, "sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    if v6 {
        run(&["ip", "netns", "exec", g, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])?;
    }
    Ok((guard, names))
}

/// Runs a command to completion; its stderr is the error.
pub fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

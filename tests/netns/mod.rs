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

/// Runs a command to completion; its stderr is the error.
pub fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

//! Helpers shared by the tests and the benches: the recorded hellos, record re-framing, and a
//! builder for hand-made hellos written field by field.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One recorded ClientHello from `tests/data/hellos/`, with what MANIFEST.tsv says it holds.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// File name, e.g. `chromium.bin`.
    pub file: String,
    /// The client that sent it.
    pub client: String,
    /// The bytes as the client sent them.
    pub bytes: Vec<u8>,
    /// Expected SNI, `None` for a hello without server_name.
    pub sni: Option<String>,
    /// Expected ALPN list.
    pub alpn: Vec<String>,
    /// Records on the wire.
    pub records: usize,
    /// Whether encrypted_client_hello is present.
    pub ech: bool,
}

pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/hellos")
}

/// Every recorded hello listed in MANIFEST.tsv.
pub fn recorded() -> Vec<Recorded> {
    let manifest = std::fs::read_to_string(data_dir().join("MANIFEST.tsv")).expect("MANIFEST.tsv");
    manifest
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            let dash = |s: &str| (s != "-").then(|| s.to_string());
            Recorded {
                file: f[0].to_string(),
                client: f[1].to_string(),
                bytes: std::fs::read(data_dir().join(f[0])).expect(f[0]),
                sni: dash(f[3]),
                alpn: dash(f[4]).map(|a| a.split(',').map(str::to_string).collect()).unwrap_or_default(),
                records: f[6].parse().unwrap(),
                ech: f[7] == "yes",
            }
        })
        .collect()
}

/// The recorded hello sent by `file`.
pub fn recording(file: &str) -> Recorded {
    recorded().into_iter().find(|r| r.file == file).expect(file)
}

/// The handshake bytes carried by a sequence of TLS records, and the first record's version.
pub fn unframe(wire: &[u8]) -> (Vec<u8>, [u8; 2]) {
    let version = [wire[1], wire[2]];
    let mut payload = Vec::new();
    let mut rest = wire;
    while rest.len() >= 5 {
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        payload.extend_from_slice(&rest[5..5 + len]);
        rest = &rest[5 + len..];
    }
    (payload, version)
}

/// Re-frames `payload` into handshake records of at most `sizes[i]` bytes each (the last size
/// repeats), as a client with a small fragment size would send it.
pub fn frame(payload: &[u8], version: [u8; 2], sizes: &[usize]) -> Vec<u8> {
    let mut wire = Vec::new();
    let mut rest = payload;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i.min(sizes.len() - 1)].clamp(1, rest.len());
        wire.extend(record(0x16, version, &rest[..n]));
        rest = &rest[n..];
        i += 1;
    }
    wire
}

/// The record splittings every recorded hello must survive: as recorded, 1-byte records, two
/// records split in the middle.
pub fn splittings(wire: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let (payload, version) = unframe(wire);
    vec![
        ("original", wire.to_vec()),
        ("1-byte records", frame(&payload, version, &[1])),
        ("2 records", frame(&payload, version, &[payload.len() / 2, payload.len()])),
    ]
}

// ---- QUIC ----

/// The datagrams of a recorded QUIC capture under `tests/data/quic/` (hex, one datagram per
/// line, `#` comment lines).
pub fn quic_capture(file: &str) -> Vec<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/quic").join(file);
    std::fs::read_to_string(&path)
        .expect(file)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| hex::decode(l).expect(file))
        .collect()
}

/// A ClientHello message (no record header) for `sni`, to seal into QUIC Initials: the OpenSSL
/// TLS 1.3 capture with its name overwritten in place, so `sni` must have its 22 bytes.
pub fn hello_message_for(sni: &str) -> Vec<u8> {
    let wire = recording("openssl-tls13.bin").bytes;
    let mut msg = wire[5..].to_vec();
    let old = b"acme.my.salesforce.com";
    assert_eq!(sni.len(), old.len(), "same length, so that every length field stays right");
    let at = msg.windows(old.len()).position(|w| w == old).unwrap();
    msg[at..at + old.len()].copy_from_slice(sni.as_bytes());
    msg
}

// ---- hand-made hellos, field by field ----

pub const TLS10: [u8; 2] = [0x03, 0x01];
pub const TLS12: [u8; 2] = [0x03, 0x03];

/// A TLS record: type, version, length, payload.
pub fn record(content_type: u8, version: [u8; 2], payload: &[u8]) -> Vec<u8> {
    let mut r = vec![content_type];
    r.extend(version);
    r.extend(u16::try_from(payload.len()).unwrap().to_be_bytes());
    r.extend(payload);
    r
}

/// A handshake message of type client_hello: msg_type 1, uint24 length, body.
pub fn handshake(body: &[u8]) -> Vec<u8> {
    let mut h = vec![0x01];
    h.extend(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
    h.extend(body);
    h
}

/// One extension: type, uint16 length, data.
pub fn ext(ty: u16, data: &[u8]) -> Vec<u8> {
    let mut e = ty.to_be_bytes().to_vec();
    e.extend(u16::try_from(data.len()).unwrap().to_be_bytes());
    e.extend(data);
    e
}

/// server_name extension data: uint16 list length, then (name_type, uint16 length, name)*.
pub fn sni_data(entries: &[(u8, &[u8])]) -> Vec<u8> {
    let mut list = Vec::new();
    for (ty, name) in entries {
        list.push(*ty);
        list.extend(u16::try_from(name.len()).unwrap().to_be_bytes());
        list.extend(*name);
    }
    let mut d = u16::try_from(list.len()).unwrap().to_be_bytes().to_vec();
    d.extend(list);
    d
}

/// server_name extension carrying one host_name.
pub fn sni(name: &[u8]) -> Vec<u8> {
    ext(0, &sni_data(&[(0, name)]))
}

/// ALPN extension data: uint16 list length, then (uint8 length, name)*.
pub fn alpn(protos: &[&[u8]]) -> Vec<u8> {
    let mut list = Vec::new();
    for p in protos {
        list.push(u8::try_from(p.len()).unwrap());
        list.extend(*p);
    }
    let mut d = u16::try_from(list.len()).unwrap().to_be_bytes().to_vec();
    d.extend(list);
    ext(16, &d)
}

/// A ClientHello body with the given extensions block (`None`: no extensions field at all).
pub fn hello_body(extensions: Option<&[u8]>) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend([0x03, 0x03]); // legacy_version: TLS 1.2
    b.extend([0x11; 32]); // random
    b.push(0x00); // legacy_session_id: empty
    b.extend([0x00, 0x02, 0x13, 0x01]); // cipher_suites: TLS_AES_128_GCM_SHA256
    b.extend([0x01, 0x00]); // compression_methods: null
    if let Some(exts) = extensions {
        b.extend(u16::try_from(exts.len()).unwrap().to_be_bytes()); // extensions length
        b.extend(exts);
    }
    b
}

/// A complete hello in one record with the given extensions, concatenated.
pub fn hello(exts: &[Vec<u8>]) -> Vec<u8> {
    record(0x16, TLS10, &handshake(&hello_body(Some(&exts.concat()))))
}

/// The Python interpreter itself (not a wrapper script, so that a pid is the process's), when
/// it can import aioquic, the QUIC stack the QUIC tests use; else why not.
pub fn aioquic_python() -> Result<String, String> {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys, aioquic; print(sys.executable)"])
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()),
        false => Err("python3 cannot import aioquic (pip install aioquic)".into()),
    }
}

// ---- waiting for what can be observed ----

/// How often [`eventually`] and [`wait_until`] look again.
const POLL: Duration = Duration::from_millis(20);

/// Awaits `check` until it holds, looking every 20 ms for at most `limit`; panics, naming
/// `what`, if it never does. For a condition a test can observe (a port accepting, an endpoint
/// answering, a log line written), instead of a fixed sleep that hopes it is long enough.
pub async fn eventually(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    eventually_some(limit, what, async || check().await.then_some(())).await
}

/// Awaits `check` until it yields a value, looking every 20 ms for at most `limit`, and
/// returns it; panics, naming `what`, if it never does.
pub async fn eventually_some<T>(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(POLL).await;
    }
}

/// Blocks until `done` holds, looking every 20 ms for at most `limit`; whether it did. For
/// synchronous tests that report a condition that never came rather than panic at once.
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Runs the snigate binary with `args` from the repository root, `stdin` on its standard input,
/// as a user runs it: its exit status and output.
pub fn snigate_with(args: &[&str], stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_snigate"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

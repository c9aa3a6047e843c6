//! Initial keys (RFC 9001 §5, RFC 9369 §3.3): anyone can derive them from the client's first
//! Destination Connection ID and the version's published salt, which is what lets snigate read
//! the hello without terminating the connection.

use ring::aead::quic::{AES_128, HeaderProtectionKey};
use ring::aead::{AES_128_GCM, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf::{HKDF_SHA256, KeyType, Prk, Salt};

use super::error::QuicError;

/// The AEAD tag's length, which is also the header-protection sample's.
pub(super) const TAG: usize = 16;

/// A QUIC version whose Initial packets snigate can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Version {
    /// QUIC version 1 (RFC 9000).
    V1,
    /// QUIC version 2 (RFC 9369): another salt, other labels, renumbered packet types.
    V2,
}

impl Version {
    /// The version a packet's version field names, if snigate reads it.
    pub const fn from_wire(v: u32) -> Option<Version> {
        match v {
            1 => Some(Version::V1),
            0x6b33_43cf => Some(Version::V2),
            _ => None,
        }
    }

    /// The version field.
    pub const fn wire(self) -> u32 {
        match self {
            Version::V1 => 1,
            Version::V2 => 0x6b33_43cf,
        }
    }

    /// The initial salt (RFC 9001 §5.2, RFC 9369 §3.3.1).
    const fn salt(self) -> [u8; 20] {
        match self {
            Version::V1 => [
                0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad, 0xcc,
                0xbb, 0x7f, 0x0a,
            ],
            Version::V2 => [
                0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26, 0x9d, 0xcb, 0xf9,
                0xbd, 0x2e, 0xd9,
            ],
        }
    }

    /// The HKDF labels of the packet key, IV and header-protection key (RFC 9369 §3.3.2).
    const fn labels(self) -> [&'static [u8]; 3] {
        match self {
            Version::V1 => [b"quic key", b"quic iv", b"quic hp"],
            Version::V2 => [b"quicv2 key", b"quicv2 iv", b"quicv2 hp"],
        }
    }
}

/// Which endpoint's Initial keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Protects what the client sends.
    Client,
    /// Protects what the server sends.
    Server,
}

/// The Initial key material of one side: AES-128-GCM key and IV, and the header-protection key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secrets {
    /// The packet key.
    pub key: [u8; 16],
    /// The packet IV.
    pub iv: [u8; 12],
    /// The header-protection key.
    pub hp: [u8; 16],
}

/// HKDF output of a given length.
struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-Expand-Label (RFC 8446 §7.1) with an empty context.
fn expand_label(prk: &Prk, label: &[u8], out: &mut [u8]) {
    let len = u16::try_from(out.len()).unwrap_or(u16::MAX).to_be_bytes();
    let label_len = [u8::try_from(6 + label.len()).unwrap_or(u8::MAX)];
    let info: [&[u8]; 5] = [&len, &label_len, b"tls13 ", label, &[0]];
    // Only the fixed lengths of a key, IV or secret are asked for: within HKDF's limit, so this
    // cannot fail.
    if let Ok(okm) = prk.expand(&info, Len(out.len())) {
        let _ = okm.fill(out);
    }
}

impl Secrets {
    /// The Initial secrets of `side` for a connection whose client chose `dcid`.
    pub fn initial(version: Version, dcid: &[u8], side: Side) -> Secrets {
        let initial = Salt::new(HKDF_SHA256, &version.salt()).extract(dcid);
        let mut secret = [0u8; 32];
        expand_label(&initial, if side == Side::Client { b"client in" } else { b"server in" }, &mut secret);
        let prk = Prk::new_less_safe(HKDF_SHA256, &secret);
        let [key_label, iv_label, hp_label] = version.labels();
        let mut s = Secrets { key: [0; 16], iv: [0; 12], hp: [0; 16] };
        expand_label(&prk, key_label, &mut s.key);
        expand_label(&prk, iv_label, &mut s.iv);
        expand_label(&prk, hp_label, &mut s.hp);
        s
    }
}

/// One side's Initial keys, ready to open or seal packets.
pub(super) struct Keys {
    pub(super) aead: LessSafeKey,
    iv: [u8; 12],
    hp: HeaderProtectionKey,
}

impl Keys {
    pub(super) fn new(version: Version, dcid: &[u8], side: Side) -> Keys {
        let s = Secrets::initial(version, dcid, side);
        // AES-128 takes any 16-byte key: these constructors cannot fail.
        let aead = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &s.key).expect("a 16-byte AES-128-GCM key"));
        let hp = HeaderProtectionKey::new(&AES_128, &s.hp).expect("a 16-byte AES-128 key");
        Keys { aead, iv: s.iv, hp }
    }

    pub(super) fn nonce(&self, pn: u64) -> Nonce {
        let mut nonce = self.iv;
        for (n, p) in nonce[4..].iter_mut().zip(pn.to_be_bytes()) {
            *n ^= p;
        }
        Nonce::assume_unique_for_key(nonce)
    }

    /// The header-protection mask for `sample` (its first byte for the first byte of the
    /// header, the rest for the packet number).
    pub(super) fn mask(&self, sample: &[u8]) -> Result<[u8; 5], QuicError> {
        self.hp.new_mask(sample).map_err(|_| QuicError::Malformed("header protection sample"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// RFC 9001 Appendix A.1 and RFC 9369 Appendix A.1: the keys of DCID 0x8394c8f03e515708.
    #[test]
    fn initial_secrets_match_the_rfc_vectors() {
        let dcid = h("8394c8f03e515708");
        let cases = [
            (
                Version::V1,
                Side::Client,
                "1f369613dd76d5467730efcbe3b1a22d",
                "fa044b2f42a3fd3b46fb255c",
                "9f50449e04a0e810283a1e9933adedd2",
            ),
            (
                Version::V1,
                Side::Server,
                "cf3a5331653c364c88f0f379b6067e37",
                "0ac1493ca1905853b0bba03e",
                "c206b8d9b9f0f37644430b490eeaa314",
            ),
            (
                Version::V2,
                Side::Client,
                "8b1a0bc121284290a29e0971b5cd045d",
                "91f73e2351d8fa91660e909f",
                "45b95e15235d6f45a6b19cbcb0294ba9",
            ),
            (
                Version::V2,
                Side::Server,
                "82db637861d55e1d011f19ea71d5d2a7",
                "dd13c276499c0249d3310652",
                "edf6d05c83121201b436e16877593c3a",
            ),
        ];
        for (version, side, key, iv, hp) in cases {
            let s = Secrets::initial(version, &dcid, side);
            assert_eq!(
                (hex::encode(s.key), hex::encode(s.iv), hex::encode(s.hp)),
                (key.into(), iv.into(), hp.into()),
                "{version:?} {side:?}"
            );
        }
    }

    /// RFC 9001 Appendix A.2: the client's header-protection mask for its sample.
    #[test]
    fn header_protection_matches_the_rfc_vector() {
        let keys = Keys::new(Version::V1, &h("8394c8f03e515708"), Side::Client);
        assert_eq!(hex::encode(keys.mask(&h("d1b1c98dd7689fb8ec11d242b123dc9b")).unwrap()), "437b9aec36");
    }
}

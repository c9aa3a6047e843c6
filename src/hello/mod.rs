//! The ClientHello: the pure parser ([`parse`]), the stream reader ([`read`]), and the QUIC
//! Initial inspector ([`quic`]).

mod parse;
pub mod quic;
mod read;

pub use parse::{
    Alpn, Carried, ClientHello, DEFAULT_MAX_HELLO_BYTES, EXT_ECH, Extensions, HelloError, HelloLimits, HelloParser,
    Parse, Versions, escape, is_grease, parse, version_name,
};
pub use read::{ReadError, read_client_hello, read_client_hello_now};

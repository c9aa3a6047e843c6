//! The ClientHello: the pure parser ([`parse`]) and the stream reader ([`read`]).

mod parse;
mod read;

pub use parse::{
    ClientHello, DEFAULT_MAX_HELLO_BYTES, EXT_ECH, HelloError, HelloLimits, HelloParser, Parse, escape, is_grease,
    parse, version_name,
};
pub use read::{ReadError, read_client_hello, read_client_hello_now};

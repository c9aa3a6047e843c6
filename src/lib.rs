//! snigate: an SNI-inspecting TCP edge filter.
//!
//! # Layout
//!
//! The modules follow the connection pipeline:
//!
//! - [`name`]: the validated, normalised host name every later stage matches on.
//! - [`hello`]: the ClientHello: a pure, incremental parser and a timed, bounded stream reader
//!   that keeps every byte for replay.
//! - [`reason`]: the fixed vocabulary of outcome reasons (metric labels).
//! - [`cli`]: the command line; `main.rs` only parses arguments and calls into it.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod hello;
pub mod name;
pub mod reason;

pub use hello::{ClientHello, HelloError, Limits, Parse, ReadError, parse, read_client_hello};
pub use name::{Name, NameError};
pub use reason::Reason;

//! HTTP/1.x for the `connect` and `http` modes and transparent mode's HTTP path.
//!
//! - [`head`]: request heads, read bounded and timed (httparse does the parsing), with how each
//!   request's body is framed; the request's target; the short responses snigate answers with.
//! - [`body`]: a request body's framing (Content-Length, chunked), followed as it passes.
//! - [`forward`]: the client → upstream direction of an HTTP connection, request by request,
//!   each decided before any of its bytes go on.

pub(crate) mod body;
pub(crate) mod forward;
pub(crate) mod head;

pub use head::{
    Body, Head, HeadError, MAX_HEAD, MAX_LINE, Refusal, Target, http_target, is_request_line, may_be_request,
    parse_authority, parse_head, read_head,
};

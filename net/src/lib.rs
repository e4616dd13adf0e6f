//! Kafka framing and codecs for sluice.
//!
//! Architecture invariant: `net` does no disk I/O. Its codecs do no I/O at
//! all; `client` (for tools, blocking) is the only part that opens
//! sockets, and the broker's sockets belong to the broker.

pub mod client;
pub mod frame;
pub mod guard;
pub mod request;
pub mod response;

//! Kafka framing and codecs for sluice.
//!
//! Architecture invariant: `net` does no I/O of its own. It turns bytes
//! into requests and responses into bytes; sockets belong to the broker.

pub mod frame;
pub mod guard;
pub mod request;
pub mod response;

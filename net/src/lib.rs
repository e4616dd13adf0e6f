//! Kafka framing and codecs for sluice.
//!
//! Architecture invariant: `net` does no disk I/O. Its codecs do no I/O at
//! all; the client side opens sockets: `client` (blocking, for tools) and
//! `producer` / `consumer` (asynchronous, on glommio executors, for the
//! load generator). The broker's sockets belong to the broker.

pub mod aio;
pub mod client;
pub mod cluster;
pub mod consumer;
pub mod frame;
pub mod group;
pub mod guard;
pub mod producer;
pub mod records;
pub mod request;
pub mod response;

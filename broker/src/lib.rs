//! The sluice broker: shards, partition ownership, topic metadata and the
//! Kafka request handlers. `serve` starts the shards.
//!
//! Architecture invariant: the broker reaches segment files only through
//! `sluice_storage::PartitionLog`.

pub mod apis;
pub mod cli;
pub mod config;
pub mod connection;
pub mod controller;
pub mod groups;
pub mod metadata;
pub mod producers;
pub mod serve;
pub mod shard;
pub mod shard_main;

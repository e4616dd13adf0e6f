//! The sluice broker: shards, partition ownership and (in later versions)
//! the Kafka request handlers. `serve` starts the shards.
//!
//! Architecture invariant: the broker reaches segment files only through
//! `sluice_storage::PartitionLog`.

pub mod apis;
pub mod connection;
pub mod serve;
pub mod shard;

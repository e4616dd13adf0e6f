//! Host facts, limits and defaults that the other sluice crates read.
//!
//! Architecture invariant: this crate depends on nothing else in the
//! workspace. Every limit is named with its unit last (`segment_bytes_max`,
//! `flush_interval_ms`) and lives in [`limits`], so there is one place to
//! read what sluice bounds and by how much.

pub mod host;
pub mod io_properties;
pub mod io_workers;
pub mod limits;
pub mod tune;

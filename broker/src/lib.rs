//! The sluice broker: shards, partition ownership, topic metadata and the
//! Kafka request handlers. `serve` starts the shards.
//!
//! Architecture invariant: the broker reaches segment files only through
//! `sluice_storage::PartitionLog`.

pub mod admin_http;
pub mod apis;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod controller;
pub mod failstop;
pub mod groups;
pub mod memory;
pub mod metadata;
pub mod metrics;
pub mod producers;
pub mod security;
pub mod serve;
pub mod shard;
pub mod shard_main;

/// What the unit tests share.
#[cfg(test)]
pub(crate) mod test_support {
    /// A temporary directory on the build's disk (O_DIRECT needs a real
    /// file system, and /tmp is often tmpfs).
    pub fn tempdir(prefix: &str) -> tempfile::TempDir {
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tmp");
        std::fs::create_dir_all(&base).unwrap();
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(base)
            .unwrap()
    }

    /// Runs `f` on a glommio executor of its own, sized for the test
    /// machine's locked-memory limit.
    pub fn run<T: Send + 'static, F: std::future::Future<Output = T> + 'static>(
        f: impl FnOnce() -> F + Send + 'static,
    ) -> T {
        sluice_storage::runtime::executor_builder(
            glommio::Placement::Unbound,
            256 * 1024,
            std::time::Duration::ZERO,
        )
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
    }
}

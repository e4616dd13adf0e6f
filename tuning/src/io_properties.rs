//! The disk's measured properties (`sluice iotune` writes them next to the
//! data as `io-properties.toml`; `sluice serve` reads them to size its
//! writes). A flat TOML file of integers, written and read here so the
//! crate needs no parser.

use std::path::{Path, PathBuf};

use crate::limits;

/// The file name in the data directory.
pub const FILE_NAME: &str = "io-properties.toml";

/// The background sync window in sync latencies.
const BACKGROUND_SYNC_PERIODS: u64 = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoProperties {
    /// The smallest write that reaches (nearly) the device's best
    /// sequential bandwidth: the size of the log's DMA writes.
    pub write_chunk_bytes: u64,
    /// Writes of that size worth keeping in flight.
    pub queue_depth: u64,
    /// The typical fdatasync after a write of that size.
    pub sync_latency_us: u64,
    pub write_bytes_per_sec: u64,
    pub read_bytes_per_sec: u64,
}

pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

impl IoProperties {
    pub fn to_toml(&self) -> String {
        format!(
            "# Measured by `sluice iotune`; read by `sluice serve` at start-up.\n\
             write_chunk_bytes = {}\nqueue_depth = {}\nsync_latency_us = {}\n\
             write_bytes_per_sec = {}\nread_bytes_per_sec = {}\n",
            self.write_chunk_bytes,
            self.queue_depth,
            self.sync_latency_us,
            self.write_bytes_per_sec,
            self.read_bytes_per_sec
        )
    }

    pub fn from_toml(text: &str) -> Result<IoProperties, String> {
        let mut v = std::collections::BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (k, val) = line
                .split_once('=')
                .ok_or_else(|| format!("line {}: expected key = value", n + 1))?;
            let val: u64 = val
                .trim()
                .replace('_', "")
                .parse()
                .map_err(|_| format!("line {}: {} is not a whole number", n + 1, val.trim()))?;
            v.insert(k.trim().to_string(), val);
        }
        let get = |k: &str| v.get(k).copied().ok_or_else(|| format!("{k} is missing"));
        let p = IoProperties {
            write_chunk_bytes: get("write_chunk_bytes")?,
            queue_depth: get("queue_depth")?,
            sync_latency_us: get("sync_latency_us")?,
            write_bytes_per_sec: get("write_bytes_per_sec")?,
            read_bytes_per_sec: get("read_bytes_per_sec")?,
        };
        let align = limits::DIRECT_IO_ALIGN_BYTES as u64;
        if !(limits::TAIL_BUFFER_BYTES_MIN as u64..=limits::TAIL_BUFFER_BYTES_MAX as u64)
            .contains(&p.write_chunk_bytes)
            || !p.write_chunk_bytes.is_multiple_of(align)
        {
            return Err(format!(
                "write_chunk_bytes {} must be a multiple of {align} between {} and {}",
                p.write_chunk_bytes,
                limits::TAIL_BUFFER_BYTES_MIN,
                limits::TAIL_BUFFER_BYTES_MAX
            ));
        }
        if !(1..=limits::WRITE_BEHIND_MAX as u64).contains(&p.queue_depth) {
            return Err(format!(
                "queue_depth {} must be between 1 and {}",
                p.queue_depth,
                limits::WRITE_BEHIND_MAX
            ));
        }
        Ok(p)
    }

    /// The group-commit window of appends nobody waits on (acks 0 and 1):
    /// they are synced once this old, which keeps those background syncs to
    /// about one in fifty of the disk's time (one sync of
    /// `sync_latency_us` per window), within 1 ms and the default of
    /// `limits::FLUSH_INTERVAL_MS_DEFAULT`. An acks=all produce has no
    /// window: it starts a sync at once, or joins the next one, which then
    /// covers every append waiting for it.
    pub fn background_sync_ms(&self) -> u64 {
        (self.sync_latency_us * BACKGROUND_SYNC_PERIODS)
            .div_ceil(1000)
            .clamp(1, limits::FLUSH_INTERVAL_MS_DEFAULT)
    }

    /// The file in `dir`: `Ok(None)` when there is none.
    pub fn load(dir: &Path) -> Result<Option<IoProperties>, String> {
        let p = path_in(dir);
        match std::fs::read_to_string(&p) {
            Ok(t) => IoProperties::from_toml(&t)
                .map(Some)
                .map_err(|e| format!("{}: {e}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", p.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let p = IoProperties {
            write_chunk_bytes: 256 * 1024,
            queue_depth: 8,
            sync_latency_us: 850,
            write_bytes_per_sec: 1_500_000_000,
            read_bytes_per_sec: 2_000_000_000,
        };
        assert_eq!(IoProperties::from_toml(&p.to_toml()).unwrap(), p);
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(IoProperties::load(dir.path()).unwrap(), None);
        std::fs::write(path_in(dir.path()), p.to_toml()).unwrap();
        assert_eq!(IoProperties::load(dir.path()).unwrap(), Some(p));
        let bad = p.to_toml().replace("queue_depth = 8", "queue_depth = 0");
        assert!(IoProperties::from_toml(&bad)
            .unwrap_err()
            .contains("queue_depth"));
        let bad = p.to_toml().replace("262144", "1000");
        assert!(IoProperties::from_toml(&bad)
            .unwrap_err()
            .contains("multiple"));
        let bad = p
            .to_toml()
            .replace("sync_latency_us = 850", "sync_latency_us = fast");
        assert!(IoProperties::from_toml(&bad)
            .unwrap_err()
            .contains("whole number"));
        let missing = "write_chunk_bytes = 4096\n";
        assert!(IoProperties::from_toml(missing)
            .unwrap_err()
            .contains("missing"));
        std::fs::write(path_in(dir.path()), "garbage").unwrap();
        // The window: fifty syncs' time, within 1 ms and the default.
        assert_eq!(p.background_sync_ms(), 43);
        let w = |us| {
            IoProperties {
                sync_latency_us: us,
                ..p
            }
            .background_sync_ms()
        };
        assert_eq!(w(88), 5);
        assert_eq!(w(0), 1);
        assert_eq!(w(10), 1);
        assert_eq!(w(8_000), 400);
        assert_eq!(w(1_000_000), limits::FLUSH_INTERVAL_MS_DEFAULT);
        assert!(IoProperties::load(dir.path()).is_err());
    }
}

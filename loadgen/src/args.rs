//! The load generator's flags (these names are an interface: scripts use
//! them) and their parsing.

use std::path::PathBuf;
use std::time::Duration;

use sluice_net::records::Compression;

#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct LoadgenArgs {
    /// Broker to start from (HOST:PORT).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Topic; default a fresh name.
    #[arg(long)]
    pub topic: Option<String>,
    /// Partitions; the topic is created with this many when it does not
    /// exist.
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Consumers reading the topic (0: produce only).
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Message value size in bytes, N or MIN..MAX (at least 16: the send
    /// stamp travels in the value).
    #[arg(long, default_value = "1000", value_parser = parse_size_range)]
    #[serde(serialize_with = "ser_range")]
    pub message_bytes: (usize, usize),
    /// Largest record batch per partition, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub batch_bytes: usize,
    /// How long a batch waits for more records before it is due. A due
    /// batch goes when its connection has room (see --max-in-flight) and
    /// keeps filling until then; 0 sends whenever there is room.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// 0, 1 or all.
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    pub acks: i16,
    #[arg(long, default_value = "none")]
    #[serde(serialize_with = "ser_display")]
    pub compression: CompressionArg,
    /// Produce requests in flight per connection.
    #[arg(long, default_value_t = 5)]
    pub max_in_flight: usize,
    /// Messages per second, or bytes per second with a unit (50MB, 1GB,
    /// 100KB); absent means as fast as possible.
    #[arg(long, value_parser = parse_rate)]
    #[serde(serialize_with = "ser_rate")]
    pub rate: Option<Rate>,
    /// How long to produce after the warm-up (30s, 500ms, 2m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    #[serde(serialize_with = "ser_duration")]
    pub duration: Duration,
    /// Produce this many messages instead of running for a duration.
    #[arg(long)]
    pub messages: Option<u64>,
    /// Run this long before measuring.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    #[serde(serialize_with = "ser_duration")]
    pub warmup: Duration,
    /// none, round-robin, random or zipf:S.
    #[arg(long, default_value = "none")]
    pub keys: String,
    #[arg(long, default_value_t = 1000)]
    pub key_count: u64,
    /// random, zeros or compressible:RATIO.
    #[arg(long, default_value = "random")]
    pub payload: String,
    /// Write this many bytes first, then measure consumers reading them
    /// back (catch-up); with a unit (2GB) or in bytes.
    #[arg(long, value_parser = parse_bytes)]
    pub backlog: Option<u64>,
    /// Executors (one per core).
    #[arg(long)]
    pub cores: Option<usize>,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the per-second series as CSV here.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Write a self-contained HTML page with charts here.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy)]
pub struct CompressionArg(pub Compression);

impl std::str::FromStr for CompressionArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse().map(CompressionArg)
    }
}

impl std::fmt::Display for CompressionArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self.0 {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        };
        f.write_str(s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    Messages(f64),
    Bytes(f64),
}

impl Rate {
    /// Messages per second for messages of `avg_bytes`.
    pub fn messages_per_sec(&self, avg_bytes: f64) -> f64 {
        match *self {
            Rate::Messages(m) => m,
            Rate::Bytes(b) => b / avg_bytes.max(1.0),
        }
    }
}

/// The smallest message: the 8-byte send stamp and 8 more bytes.
pub const MESSAGE_BYTES_MIN: usize = 16;

pub fn parse_size_range(s: &str) -> Result<(usize, usize), String> {
    let one = |v: &str| {
        v.trim()
            .parse::<usize>()
            .map_err(|_| format!("{v:?}: expected a byte count"))
    };
    let (lo, hi) = match s.split_once("..") {
        Some((a, b)) => (one(a)?, one(b)?),
        None => {
            let v = one(s)?;
            (v, v)
        }
    };
    if lo < MESSAGE_BYTES_MIN || hi < lo {
        return Err(format!(
            "{s:?}: sizes must be at least {MESSAGE_BYTES_MIN} and MIN <= MAX"
        ));
    }
    Ok((lo, hi))
}

pub fn parse_acks(s: &str) -> Result<i16, String> {
    match s {
        "0" => Ok(0),
        "1" => Ok(1),
        "all" | "-1" => Ok(-1),
        _ => Err(format!("{s:?}: expected 0, 1 or all")),
    }
}

pub fn parse_rate(s: &str) -> Result<Rate, String> {
    let s = s.trim();
    let units = [
        ("GB", 1e9),
        ("MB", 1e6),
        ("KB", 1e3),
        ("GiB", (1u64 << 30) as f64),
        ("MiB", (1u64 << 20) as f64),
        ("KiB", 1024.0),
        ("B", 1.0),
    ];
    for (u, mul) in units {
        if let Some(n) = s.strip_suffix(u) {
            let v: f64 = n
                .trim()
                .parse()
                .map_err(|_| format!("{s:?}: expected a number before {u}"))?;
            if v <= 0.0 {
                return Err(format!("{s:?}: must be positive"));
            }
            return Ok(Rate::Bytes(v * mul));
        }
    }
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?}: expected messages per second or a byte rate like 50MB"))?;
    if v <= 0.0 {
        return Err(format!("{s:?}: must be positive"));
    }
    Ok(Rate::Messages(v))
}

/// A byte count, with an optional unit (KB, MB, GB, KiB, MiB, GiB).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    match parse_rate(s)? {
        Rate::Bytes(b) | Rate::Messages(b) => Ok(b as u64),
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (n, mul_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e3)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600e3)
    } else {
        return Err(format!("{s:?}: expected a duration like 30s, 500ms or 2m"));
    };
    let v: f64 = n
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration like 30s, 500ms or 2m"))?;
    if v < 0.0 {
        return Err(format!("{s:?}: must not be negative"));
    }
    Ok(Duration::from_micros((v * mul_ms * 1e3) as u64))
}

fn ser_range<S: serde::Serializer>(v: &(usize, usize), s: S) -> Result<S::Ok, S::Error> {
    if v.0 == v.1 {
        s.serialize_u64(v.0 as u64)
    } else {
        s.serialize_str(&format!("{}..{}", v.0, v.1))
    }
}

fn ser_display<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.to_string())
}

fn ser_duration<S: serde::Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{}ms", v.as_millis()))
}

fn ser_rate<S: serde::Serializer>(v: &Option<Rate>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        None => s.serialize_none(),
        Some(Rate::Messages(m)) => s.serialize_str(&format!("{m} msg/s")),
        Some(Rate::Bytes(b)) => s.serialize_str(&format!("{b} B/s")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values_parse_and_bad_ones_say_why() {
        assert_eq!(parse_size_range("1000").unwrap(), (1000, 1000));
        assert_eq!(parse_size_range("100..2000").unwrap(), (100, 2000));
        assert!(parse_size_range("8").unwrap_err().contains("at least"));
        assert!(parse_size_range("200..100").is_err());
        assert_eq!(parse_rate("50MB").unwrap(), Rate::Bytes(50e6));
        assert_eq!(parse_rate("1000").unwrap(), Rate::Messages(1000.0));
        assert_eq!(parse_rate("1KiB").unwrap(), Rate::Bytes(1024.0));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("0").is_err());
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("30").is_err());
        assert_eq!(parse_acks("all").unwrap(), -1);
        assert!(parse_acks("2").is_err());
        assert_eq!(Rate::Bytes(1e6).messages_per_sec(1000.0), 1000.0);
        assert_eq!(parse_bytes("2GB").unwrap(), 2_000_000_000);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert!(parse_bytes("-1").is_err());
    }
}

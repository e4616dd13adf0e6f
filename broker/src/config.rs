//! The broker's configuration: command-line flags, `SLUICE_*` environment
//! variables and an optional TOML file (`--config FILE`), in that order of
//! precedence, over defaults that start a working broker with nothing set.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use sluice_tuning::limits;

use crate::security::{Listener, Protocol};

/// Settings as they come from the command line or the environment: every
/// one optional, so the file and the defaults can fill the rest.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (keys as the flags, with
    /// `_` or `-`); flags and SLUICE_* variables override it.
    #[arg(long, env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Listeners, comma-separated `[PROTOCOL://]IP:PORT`, PROTOCOL one of
    /// PLAINTEXT (the default), SSL, SASL_PLAINTEXT, SASL_SSL, each at most
    /// once; every shard listens on each (SO_REUSEPORT). Default
    /// 0.0.0.0:9092.
    #[arg(long, env = "SLUICE_LISTEN")]
    pub listen: Option<String>,
    /// What clients are told to connect to: `[PROTOCOL://]HOST:PORT` per
    /// listener, in the same order. Default: each listen address, with
    /// this host's name when it listens on 0.0.0.0.
    #[arg(long, env = "SLUICE_ADVERTISED_LISTENER")]
    pub advertised_listener: Option<String>,
    /// PEM certificate chain of SSL and SASL_SSL listeners.
    #[arg(long, env = "SLUICE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "SLUICE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: TLS clients must present a certificate they
    /// signed (mutual TLS); on SSL listeners its subject is the
    /// principal (`User:CN=...`).
    #[arg(long, env = "SLUICE_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Principals the ACLs do not apply to: comma-separated user names
    /// (`admin`) or principals (`User:CN=admin`).
    #[arg(long, env = "SLUICE_SUPER_USERS")]
    pub super_users: Option<String>,
    /// Milliseconds a SASL authentication lasts: the broker tells the
    /// client (KIP-368), which re-authenticates on the same connection
    /// before then, or the connection is closed at its next request.
    /// Default 0: no limit.
    #[arg(long, env = "SLUICE_SASL_SESSION_LIFETIME_MS")]
    pub sasl_session_lifetime_ms: Option<u64>,
    /// Directory holding the topic metadata and one directory per partition.
    /// Default ./sluice-data.
    #[arg(long, env = "SLUICE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Shards (one pinned executor each); default: every online CPU.
    #[arg(long, env = "SLUICE_CORES")]
    pub cores: Option<usize>,
    /// This broker's node id in Metadata answers. Default 0.
    #[arg(long, env = "SLUICE_NODE_ID")]
    pub node_id: Option<i32>,
    /// Create a topic when a client asks for metadata of one that does not
    /// exist. Default true.
    #[arg(long, env = "SLUICE_AUTO_CREATE_TOPICS", action = clap::ArgAction::Set)]
    pub auto_create_topics: Option<bool>,
    /// Partitions of an auto-created topic, or of one created without a
    /// count. Default 1.
    #[arg(long, env = "SLUICE_DEFAULT_PARTITIONS")]
    pub default_partitions: Option<u32>,
    /// Memory each shard sets up at start (faulted in before it serves)
    /// for receive buffers and cached batches. Default: 30% of the
    /// machine's memory shared by the shards (at least 64 MiB).
    #[arg(long, env = "SLUICE_SHARD_MEMORY_BYTES")]
    pub shard_memory_bytes: Option<usize>,
    /// Per-shard cache budget in bytes. Default: 75% of the shard's
    /// memory; a larger figure grows the shard's memory to hold it.
    #[arg(long, env = "SLUICE_CACHE_BYTES_MAX")]
    pub cache_bytes_max: Option<usize>,
    /// Committed offsets of empty groups (and of deleted topics) expire
    /// after this many minutes. Default 10080 (7 days).
    #[arg(long, env = "SLUICE_OFFSETS_RETENTION_MINUTES")]
    pub offsets_retention_minutes: Option<u64>,
    /// Microseconds a shard keeps polling for work after it runs out,
    /// before it sleeps in the kernel: a request that arrives in that
    /// window skips the wake-up. 0 sleeps at once (no spinning CPU).
    /// Default 200.
    #[arg(long, env = "SLUICE_IDLE_POLL_US")]
    pub idle_poll_us: Option<u64>,
    /// Priority of the kernel's io_uring workers, which run the writes
    /// that extend a segment and every fdatasync: `realtime` (SCHED_FIFO
    /// 1, so a polling shard does not keep them off its CPU; needs root
    /// or CAP_SYS_NICE, else a warning) or `normal`. Default realtime.
    #[arg(long, env = "SLUICE_IO_WORKER_PRIORITY", value_enum)]
    pub io_worker_priority: Option<IoWorkerPriority>,
    /// Smallest segment.bytes a topic may set. Default 1048576.
    #[arg(long, env = "SLUICE_SEGMENT_BYTES_MIN")]
    pub segment_bytes_min: Option<u64>,
    /// Smallest segment.ms a topic may set. Default 60000.
    #[arg(long, env = "SLUICE_SEGMENT_MS_MIN")]
    pub segment_ms_min: Option<i64>,
    /// Bytes of requests each shard holds at once, read and not yet
    /// answered (at least 200 MiB). Default: 5% of memory shared by the
    /// shards, at most 2 GiB a shard.
    #[arg(long, env = "SLUICE_REQUEST_MEMORY_BYTES")]
    pub request_memory_bytes: Option<usize>,
    /// A task that runs this long without yielding is logged as a stall
    /// (0 turns the detector off). Default 10.
    #[arg(long, env = "SLUICE_STALL_THRESHOLD_MS")]
    pub stall_threshold_ms: Option<u64>,
    /// Partitions the broker holds per shard; past shards times this,
    /// topic and partition creation is refused. Default 1000.
    #[arg(long, env = "SLUICE_PARTITIONS_PER_SHARD_MAX")]
    pub partitions_per_shard_max: Option<usize>,
    /// The nodes of the cluster, `ID@HOST:PORT,...` (each node's id and
    /// node-to-node address); this node's `--node-id` must be one of
    /// them. Unset: a cluster of one, as a single broker.
    #[arg(long, env = "SLUICE_CLUSTER")]
    pub cluster: Option<String>,
    /// Address the node-to-node listener binds. Default: 0.0.0.0 and the
    /// port of this node's entry in `--cluster`.
    #[arg(long, env = "SLUICE_REPLICATION_LISTEN")]
    pub replication_listen: Option<SocketAddr>,
    /// Replicas of each partition of a topic created without a factor
    /// (-1), on a node of a cluster. Default: 3, or every node when
    /// there are fewer.
    #[arg(long, env = "SLUICE_DEFAULT_REPLICATION_FACTOR")]
    pub default_replication_factor: Option<u16>,
    /// Milliseconds without a controller before a node calls an
    /// election (raised at random by up to as much again, so nodes rarely
    /// tie). Default 500.
    #[arg(long, env = "SLUICE_ELECTION_TIMEOUT_MS")]
    pub election_timeout_ms: Option<u64>,
    /// Address of the admin endpoint (`GET /metrics`, `GET /health`), or
    /// `off`. Default 127.0.0.1:9644; a port of 0 picks a free one (the
    /// log names it). An address in use leaves the broker serving
    /// without it, with a warning.
    #[arg(long, env = "SLUICE_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
}

/// See `ServeArgs::io_worker_priority`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IoWorkerPriority {
    Realtime,
    Normal,
}

/// The same settings in a TOML file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    listen: Option<String>,
    #[serde(alias = "advertised_listener")]
    advertised_listener: Option<String>,
    #[serde(alias = "tls_cert")]
    tls_cert: Option<PathBuf>,
    #[serde(alias = "tls_key")]
    tls_key: Option<PathBuf>,
    #[serde(alias = "tls_client_ca")]
    tls_client_ca: Option<PathBuf>,
    #[serde(alias = "super_users")]
    super_users: Option<String>,
    #[serde(alias = "sasl_session_lifetime_ms")]
    sasl_session_lifetime_ms: Option<u64>,
    #[serde(alias = "data_dir")]
    data_dir: Option<PathBuf>,
    cores: Option<usize>,
    #[serde(alias = "node_id")]
    node_id: Option<i32>,
    #[serde(alias = "auto_create_topics")]
    auto_create_topics: Option<bool>,
    #[serde(alias = "default_partitions")]
    default_partitions: Option<u32>,
    #[serde(alias = "shard_memory_bytes")]
    shard_memory_bytes: Option<usize>,
    #[serde(alias = "cache_bytes_max")]
    cache_bytes_max: Option<usize>,
    #[serde(alias = "offsets_retention_minutes")]
    offsets_retention_minutes: Option<u64>,
    #[serde(alias = "idle_poll_us")]
    idle_poll_us: Option<u64>,
    #[serde(alias = "io_worker_priority")]
    io_worker_priority: Option<IoWorkerPriority>,
    #[serde(alias = "segment_bytes_min")]
    segment_bytes_min: Option<u64>,
    #[serde(alias = "segment_ms_min")]
    segment_ms_min: Option<i64>,
    #[serde(alias = "request_memory_bytes")]
    request_memory_bytes: Option<usize>,
    #[serde(alias = "stall_threshold_ms")]
    stall_threshold_ms: Option<u64>,
    #[serde(alias = "partitions_per_shard_max")]
    partitions_per_shard_max: Option<usize>,
    cluster: Option<String>,
    #[serde(alias = "replication_listen")]
    replication_listen: Option<SocketAddr>,
    #[serde(alias = "election_timeout_ms")]
    election_timeout_ms: Option<u64>,
    #[serde(alias = "default_replication_factor")]
    default_replication_factor: Option<u16>,
    #[serde(alias = "admin_listen")]
    admin_listen: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "environment variable {0} is not a sluice setting (a misspelt one would be ignored); \
         `sluice serve --help` lists each flag's SLUICE_* variable"
    )]
    UnknownVariable(String),
    #[error("config file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("config file {0}: {1}")]
    Parse(PathBuf, String),
    #[error("--admin-listen {0:?}: expected IP:PORT or off")]
    AdminListen(String),
    #[error("--listen {0:?}: {1}")]
    Listen(String, String),
    #[error("--advertised-listener {0:?}: {1}")]
    Advertised(String, String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("--default-partitions {0}: must be between 1 and {1}")]
    DefaultPartitions(u32, u32),
    #[error("--node-id {0}: must not be negative")]
    NodeId(i32),
    #[error("--idle-poll-us {0}: must be at most {1}")]
    IdlePoll(u64, u64),
    #[error("--request-memory-bytes {0}: must be at least {1}")]
    RequestMemory(usize, usize),
    #[error("--cluster {0:?}: {1}")]
    Cluster(String, String),
    #[error("--election-timeout-ms {0}: must be between {1} and {2}")]
    ElectionTimeout(u64, u64, u64),
    #[error(
        "--default-replication-factor {0}: must be between 1 and the {1} node(s) of --cluster"
    )]
    ReplicationFactor(u16, usize),
}

/// The nodes of a cluster, as `--cluster` names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Every node's id and node-to-node address, ordered by id.
    pub nodes: Vec<(i32, String)>,
    /// Where this node's node-to-node listener binds.
    pub listen: SocketAddr,
    pub election_timeout_ms: u64,
    /// `None`: 3, or every node when there are fewer.
    pub default_replication_factor: Option<u16>,
}

impl ClusterConfig {
    /// Parses `ID@HOST:PORT,...` for node `me`: ids distinct and not
    /// negative, addresses HOST:PORT, `me` among them.
    pub fn parse(spec: &str, me: i32) -> Result<Vec<(i32, String)>, String> {
        let mut nodes = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (id, addr) = part
                .split_once('@')
                .ok_or_else(|| format!("{part:?} is not ID@HOST:PORT"))?;
            let id: i32 = id
                .trim()
                .parse()
                .ok()
                .filter(|i| *i >= 0)
                .ok_or_else(|| format!("{part:?}: the id must be a number, 0 or more"))?;
            let ok = addr
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                return Err(format!("{part:?}: the address must be HOST:PORT"));
            }
            if nodes.iter().any(|(n, _)| *n == id) {
                return Err(format!("node {id} is named twice"));
            }
            nodes.push((id, addr.to_string()));
        }
        if nodes.is_empty() {
            return Err("no nodes".into());
        }
        if !nodes.iter().any(|(n, _)| *n == me) {
            return Err(format!(
                "this node's id ({me}, --node-id) is not among them"
            ));
        }
        nodes.sort();
        Ok(nodes)
    }

    /// The port of node `me`'s entry.
    fn port_of(nodes: &[(i32, String)], me: i32) -> u16 {
        nodes
            .iter()
            .find(|(n, _)| *n == me)
            .and_then(|(_, a)| a.rsplit_once(':')?.1.parse().ok())
            .unwrap_or(limits::REPLICATION_PORT_DEFAULT)
    }
}

/// The resolved configuration the broker runs with.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Client listeners, at least one; the first is the one the broker's
    /// own tools and tests reach.
    pub listeners: Vec<Listener>,
    /// TLS for SSL and SASL_SSL listeners (set when there are any).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// TLS clients present a certificate (`--tls-client-ca`).
    pub tls_client_auth: bool,
    /// Principals (`User:NAME`) the ACLs do not apply to.
    pub super_users: Vec<String>,
    pub sasl_session_lifetime_ms: u64,
    pub data_dir: PathBuf,
    pub cores: Option<usize>,
    pub node_id: i32,
    pub auto_create_topics: bool,
    pub default_partitions: u32,
    /// Per shard; `None` means the default share of the machine's memory.
    pub shard_memory_bytes: Option<usize>,
    pub cache_bytes_max: Option<usize>,
    pub offsets_retention_minutes: u64,
    pub idle_poll_us: u64,
    pub io_worker_priority: IoWorkerPriority,
    pub segment_bytes_min: u64,
    pub segment_ms_min: i64,
    /// Per shard; `None` means the default share of the machine's memory.
    pub request_memory_bytes: Option<usize>,
    pub stall_threshold_ms: u64,
    pub partitions_per_shard_max: usize,
    /// `None`: a cluster of one.
    pub cluster: Option<ClusterConfig>,
    /// The admin endpoint's address; `None`: not served.
    pub admin_listen: Option<SocketAddr>,
}

impl BrokerConfig {
    /// Defaults for every setting, listening on `listen`.
    pub fn with_defaults(listen: SocketAddr, data_dir: &Path) -> BrokerConfig {
        let (advertised_host, advertised_port) = default_advertised(listen);
        BrokerConfig {
            listeners: vec![Listener {
                protocol: Protocol::Plaintext,
                addr: listen,
                advertised_host,
                advertised_port,
            }],
            tls: None,
            tls_client_auth: false,
            super_users: Vec::new(),
            sasl_session_lifetime_ms: 0,
            data_dir: data_dir.to_path_buf(),
            cores: None,
            node_id: 0,
            auto_create_topics: true,
            default_partitions: 1,
            shard_memory_bytes: None,
            cache_bytes_max: None,
            offsets_retention_minutes: limits::OFFSETS_RETENTION_MINUTES_DEFAULT,
            idle_poll_us: limits::IDLE_POLL_US_DEFAULT,
            io_worker_priority: IoWorkerPriority::Realtime,
            segment_bytes_min: limits::TOPIC_SEGMENT_BYTES_MIN_DEFAULT,
            segment_ms_min: limits::TOPIC_SEGMENT_MS_MIN_DEFAULT,
            request_memory_bytes: None,
            stall_threshold_ms: limits::STALL_THRESHOLD_MS_DEFAULT,
            partitions_per_shard_max: limits::PARTITIONS_PER_SHARD_MAX_DEFAULT,
            cluster: None,
            admin_listen: Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                limits::ADMIN_PORT_DEFAULT,
            )),
        }
    }

    /// Flags and environment over the file over the defaults.
    pub fn resolve(args: ServeArgs) -> Result<BrokerConfig, ConfigError> {
        check_variables(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()))?;
        let file = match &args.config {
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).map_err(|e| ConfigError::Read(p.clone(), e))?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|e| ConfigError::Parse(p.clone(), e.to_string()))?
            }
            None => FileConfig::default(),
        };
        let data_dir = args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./sluice-data"));
        let default_listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9092);
        let mut cfg = BrokerConfig::with_defaults(default_listen, &data_dir);
        if let Some(l) = args.listen.or(file.listen) {
            cfg.listeners = listeners(&l, args.advertised_listener.or(file.advertised_listener))?;
        } else if let Some(a) = args.advertised_listener.or(file.advertised_listener) {
            cfg.listeners = listeners(&default_listen.to_string(), Some(a))?;
        }
        cfg.super_users = args
            .super_users
            .or(file.super_users)
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(|u| match u.starts_with("User:") {
                        true => u.to_string(),
                        false => format!("User:{u}"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        cfg.sasl_session_lifetime_ms = args
            .sasl_session_lifetime_ms
            .or(file.sasl_session_lifetime_ms)
            .unwrap_or(0);
        let (cert, key) = (
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
        );
        let client_ca = args.tls_client_ca.or(file.tls_client_ca);
        let wants_tls = cfg.listeners.iter().any(|l| l.protocol.tls());
        match (cert, key) {
            (Some(cert), Some(key)) if wants_tls => {
                cfg.tls = Some(
                    crate::security::tls::server_config(&cert, &key, client_ca.as_deref())
                        .map_err(ConfigError::Tls)?,
                );
                cfg.tls_client_auth = client_ca.is_some();
            }
            (None, None) if !wants_tls => {}
            (_, _) if !wants_tls => {
                return Err(ConfigError::Tls(
                    "--tls-cert and --tls-key are set but no listener is SSL or SASL_SSL".into(),
                ))
            }
            _ => {
                return Err(ConfigError::Tls(
                    "an SSL or SASL_SSL listener needs --tls-cert and --tls-key".into(),
                ))
            }
        }
        cfg.cores = args.cores.or(file.cores);
        cfg.node_id = args.node_id.or(file.node_id).unwrap_or(0);
        if cfg.node_id < 0 {
            return Err(ConfigError::NodeId(cfg.node_id));
        }
        cfg.auto_create_topics = args
            .auto_create_topics
            .or(file.auto_create_topics)
            .unwrap_or(true);
        cfg.default_partitions = args
            .default_partitions
            .or(file.default_partitions)
            .unwrap_or(1);
        if !(1..=limits::PARTITIONS_PER_TOPIC_MAX).contains(&cfg.default_partitions) {
            return Err(ConfigError::DefaultPartitions(
                cfg.default_partitions,
                limits::PARTITIONS_PER_TOPIC_MAX,
            ));
        }
        cfg.shard_memory_bytes = args.shard_memory_bytes.or(file.shard_memory_bytes);
        cfg.cache_bytes_max = args.cache_bytes_max.or(file.cache_bytes_max);
        cfg.offsets_retention_minutes = args
            .offsets_retention_minutes
            .or(file.offsets_retention_minutes)
            .unwrap_or(limits::OFFSETS_RETENTION_MINUTES_DEFAULT);
        cfg.idle_poll_us = args
            .idle_poll_us
            .or(file.idle_poll_us)
            .unwrap_or(limits::IDLE_POLL_US_DEFAULT);
        if cfg.idle_poll_us > limits::IDLE_POLL_US_MAX {
            return Err(ConfigError::IdlePoll(
                cfg.idle_poll_us,
                limits::IDLE_POLL_US_MAX,
            ));
        }
        cfg.io_worker_priority = args
            .io_worker_priority
            .or(file.io_worker_priority)
            .unwrap_or(IoWorkerPriority::Realtime);
        cfg.segment_bytes_min = args
            .segment_bytes_min
            .or(file.segment_bytes_min)
            .unwrap_or(limits::TOPIC_SEGMENT_BYTES_MIN_DEFAULT);
        cfg.segment_ms_min = args
            .segment_ms_min
            .or(file.segment_ms_min)
            .unwrap_or(limits::TOPIC_SEGMENT_MS_MIN_DEFAULT);
        cfg.request_memory_bytes = args.request_memory_bytes.or(file.request_memory_bytes);
        if let Some(b) = cfg.request_memory_bytes {
            if b < limits::REQUEST_MEMORY_BYTES_MIN {
                return Err(ConfigError::RequestMemory(
                    b,
                    limits::REQUEST_MEMORY_BYTES_MIN,
                ));
            }
        }
        cfg.stall_threshold_ms = args
            .stall_threshold_ms
            .or(file.stall_threshold_ms)
            .unwrap_or(limits::STALL_THRESHOLD_MS_DEFAULT);
        cfg.partitions_per_shard_max = args
            .partitions_per_shard_max
            .or(file.partitions_per_shard_max)
            .unwrap_or(limits::PARTITIONS_PER_SHARD_MAX_DEFAULT);
        let election_timeout_ms = args
            .election_timeout_ms
            .or(file.election_timeout_ms)
            .unwrap_or(limits::ELECTION_TIMEOUT_MS_DEFAULT);
        let (lo, hi) = limits::ELECTION_TIMEOUT_MS_RANGE;
        if !(lo..=hi).contains(&election_timeout_ms) {
            return Err(ConfigError::ElectionTimeout(election_timeout_ms, lo, hi));
        }
        if let Some(a) = args.admin_listen.or(file.admin_listen) {
            cfg.admin_listen = match a.as_str() {
                "off" => None,
                _ => Some(a.parse().map_err(|_| ConfigError::AdminListen(a.clone()))?),
            };
        }
        if let Some(spec) = args.cluster.or(file.cluster) {
            let nodes = ClusterConfig::parse(&spec, cfg.node_id)
                .map_err(|why| ConfigError::Cluster(spec.clone(), why))?;
            let listen = args
                .replication_listen
                .or(file.replication_listen)
                .unwrap_or_else(|| {
                    SocketAddr::new(
                        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                        ClusterConfig::port_of(&nodes, cfg.node_id),
                    )
                });
            let default_replication_factor = args
                .default_replication_factor
                .or(file.default_replication_factor);
            if let Some(f) = default_replication_factor {
                if f == 0 || usize::from(f) > nodes.len() {
                    return Err(ConfigError::ReplicationFactor(f, nodes.len()));
                }
            }
            cfg.cluster = Some(ClusterConfig {
                nodes,
                listen,
                election_timeout_ms,
                default_replication_factor,
            });
        }
        Ok(cfg)
    }
}

/// The listeners of `--listen` with what `--advertised-listener` says of
/// each (the same protocols in the same order), or the defaults.
fn listeners(listen: &str, advertised: Option<String>) -> Result<Vec<Listener>, ConfigError> {
    use crate::security::listener::{host_port, parse_list};
    let bad = |why: String| ConfigError::Listen(listen.to_string(), why);
    let mut out = Vec::new();
    for (protocol, addr) in parse_list(listen).map_err(bad)? {
        let addr: SocketAddr = addr
            .parse()
            .map_err(|_| bad(format!("{addr:?} is not IP:PORT")))?;
        let (advertised_host, advertised_port) = default_advertised(addr);
        out.push(Listener {
            protocol,
            addr,
            advertised_host,
            advertised_port,
        });
    }
    if let Some(a) = advertised {
        let bad = |why: String| ConfigError::Advertised(a.clone(), why);
        let given = parse_list(&a).map_err(bad)?;
        if given.len() != out.len() {
            return Err(bad(format!(
                "{} entries for {} listener(s) of --listen",
                given.len(),
                out.len()
            )));
        }
        for (l, (protocol, hp)) in out.iter_mut().zip(given) {
            if protocol != l.protocol {
                return Err(bad(format!(
                    "{protocol} where --listen has {} (same order in both)",
                    l.protocol
                )));
            }
            let (h, p) = host_port(hp).ok_or_else(|| bad(format!("{hp:?} is not HOST:PORT")))?;
            l.advertised_host = h;
            l.advertised_port = p;
        }
    }
    Ok(out)
}

/// The listen address, with a concrete host when it listens on every
/// interface: this host's name when it resolves, else loopback.
fn default_advertised(listen: SocketAddr) -> (String, u16) {
    if !listen.ip().is_unspecified() {
        return (listen.ip().to_string(), listen.port());
    }
    let host = hostname()
        .filter(|h| (h.as_str(), listen.port()).to_socket_addrs().is_ok())
        .unwrap_or_else(|| "127.0.0.1".to_string());
    (host, listen.port())
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if r != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let s = std::str::from_utf8(&buf[..end]).ok()?.to_string();
    (!s.is_empty()).then_some(s)
}

/// `SLUICE_*` variables that are not serve's flags but are read elsewhere:
/// the log filter, the fault injection of the failure tests, the CLI's
/// bootstrap, and the project's test, benchmark and build tooling (whose
/// variables reach brokers it starts).
const OTHER_VARIABLES: &[&str] = &[
    "SLUICE_LOG",
    "SLUICE_BOOTSTRAP",
    "SLUICE_BIN",
    "SLUICE_GIT_COMMIT",
];
const OTHER_PREFIXES: &[&str] = &[
    "SLUICE_FAULT_",
    "SLUICE_TEST_",
    "SLUICE_FUZZ_",
    "SLUICE_SIM_",
    "SLUICE_MODEL_",
    "SLUICE_BENCH_",
    "SLUICE_SUITE_",
    "SLUICE_PEER_",
    "SLUICE_FAILOVER_",
];

/// The configuration reference (`broker/CONFIGURATION.md`): every
/// `sluice serve` setting with its flag, variable, file key and help
/// (which names its default), from the flags' own definitions, and the
/// other variables the binary reads. A unit test keeps the file equal to
/// this.
pub fn reference() -> String {
    let cmd = <ServeArgs as clap::Args>::augment_args(clap::Command::new("serve"));
    let mut out = String::from(
        "# sluice configuration reference\n\n\
         Generated from the code (`broker/src/config.rs`, `reference`); a unit test fails \
         when this file and the code differ. Regenerate it with\n\
         `SLUICE_TEST_BLESS=1 cargo test -p sluice-broker --lib configuration_reference`.\n\n\
         Every setting of `sluice serve` is a flag, a `SLUICE_*` environment variable and a \
         key of the TOML file given with `--config` (the flag's name; `_` may stand for \
         `-`). Flags win over variables, variables over the file, the file over the \
         defaults. An unknown key or `SLUICE_*` variable is an error naming it.\n\n",
    );
    for a in cmd.get_arguments() {
        let Some(long) = a.get_long() else { continue };
        let env = a
            .get_env()
            .and_then(|e| e.to_str())
            .map(str::to_string)
            .unwrap_or_default();
        let help = a
            .get_long_help()
            .or(a.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        let key = if long == "config" {
            "(none: the file itself)".to_string()
        } else {
            format!("`{long}`")
        };
        out.push_str(&format!(
            "## `--{long}`\n\n- Variable: `{env}`\n- File key: {key}\n\n{}\n\n",
            help.trim()
        ));
    }
    out.push_str(
        "## Other variables\n\n\
         - `SLUICE_LOG`: the log filter (tracing's env-filter syntax: `info`, `debug`, \
         `sluice_broker=debug,info`). Default `info`.\n\
         - `SLUICE_BOOTSTRAP`: the CLI's `--bootstrap`. Default `127.0.0.1:9092`.\n",
    );
    out
}

/// Refuses a `SLUICE_*` variable that names no setting: a misspelt one
/// would otherwise be ignored without a word.
fn check_variables(names: impl Iterator<Item = String>) -> Result<(), ConfigError> {
    let cmd = <ServeArgs as clap::Args>::augment_args(clap::Command::new("serve"));
    let flags: Vec<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_env())
        .filter_map(|e| e.to_str().map(str::to_string))
        .collect();
    for name in names.filter(|n| n.starts_with("SLUICE_")) {
        let known = flags.contains(&name)
            || OTHER_VARIABLES.contains(&name.as_str())
            || OTHER_PREFIXES.iter().any(|p| name.starts_with(p));
        if !known {
            return Err(ConfigError::UnknownVariable(name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn unknown_sluice_variables_are_refused_by_name() {
        let ok = [
            "SLUICE_LISTEN",
            "SLUICE_DATA_DIR",
            "SLUICE_CLUSTER",
            "SLUICE_LOG",
            "SLUICE_FUZZ_SEED",
            "PATH",
        ];
        assert!(check_variables(ok.iter().map(|s| s.to_string())).is_ok());
        for bad in ["SLUICE_LISTENER", "SLUICE_DATADIR", "SLUICE_"] {
            let names = ok.iter().chain([&bad]).map(|s| s.to_string());
            match check_variables(names) {
                Err(ConfigError::UnknownVariable(n)) => assert_eq!(n, bad),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    use super::*;

    /// The checked-in reference is the one the code makes, and every
    /// flag it lists is a key the file takes.
    #[test]
    fn configuration_reference_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("CONFIGURATION.md");
        let made = reference();
        if std::env::var_os("SLUICE_TEST_BLESS").is_some() {
            std::fs::write(&path, &made).unwrap();
        }
        let stored = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            stored == made,
            "{} is out of date: regenerate it with \
             SLUICE_TEST_BLESS=1 cargo test -p sluice-broker --lib configuration_reference",
            path.display()
        );
        let cmd = <ServeArgs as clap::Args>::augment_args(clap::Command::new("serve"));
        for long in cmd.get_arguments().filter_map(|a| a.get_long()) {
            if long == "config" {
                continue;
            }
            // A value of the wrong type: refused for its type, not as an
            // unknown key.
            let e = toml::from_str::<FileConfig>(&format!("{long} = [[1]]"))
                .unwrap_err()
                .to_string();
            assert!(
                !e.contains("unknown field"),
                "--{long} has no file key: {e}"
            );
        }
    }

    /// A file fills what flags leave unset; flags win where both are set.
    #[test]
    fn flags_override_file_and_file_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("sluice.toml");
        std::fs::write(
            &f,
            "listen = \"127.0.0.1:9999\"\nnode-id = 7\ndefault_partitions = 4\nauto-create-topics = false\nidle-poll-us = 50\nio-worker-priority = \"normal\"\n",
        )
        .unwrap();
        let cfg = BrokerConfig::resolve(ServeArgs {
            config: Some(f.clone()),
            node_id: Some(3),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            cfg.listeners,
            [Listener {
                protocol: Protocol::Plaintext,
                addr: "127.0.0.1:9999".parse().unwrap(),
                advertised_host: "127.0.0.1".into(),
                advertised_port: 9999
            }]
        );
        assert_eq!(cfg.node_id, 3);
        assert_eq!(cfg.default_partitions, 4);
        assert!(!cfg.auto_create_topics);
        assert_eq!(cfg.data_dir, PathBuf::from("./sluice-data"));
        assert_eq!(cfg.idle_poll_us, 50);
        assert_eq!(cfg.io_worker_priority, IoWorkerPriority::Normal);
        let e = BrokerConfig::resolve(ServeArgs {
            idle_poll_us: Some(limits::IDLE_POLL_US_MAX + 1),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("--idle-poll-us"), "{e}");
        let cfg = BrokerConfig::resolve(ServeArgs::default()).unwrap();
        assert_eq!(cfg.idle_poll_us, limits::IDLE_POLL_US_DEFAULT);
        assert_eq!(cfg.io_worker_priority, IoWorkerPriority::Realtime);

        std::fs::write(&f, "no-such-key = 1\n").unwrap();
        let e = BrokerConfig::resolve(ServeArgs {
            config: Some(f),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("no-such-key"), "{e}");
    }

    /// `--cluster` names distinct nodes with addresses, this node among
    /// them; the replication port defaults to this node's entry.
    #[test]
    fn cluster_flags() {
        let cfg = BrokerConfig::resolve(ServeArgs {
            node_id: Some(2),
            cluster: Some("3@c.example:9303, 1@10.0.0.1:9093,2@[::1]:9203".into()),
            ..Default::default()
        })
        .unwrap();
        let c = cfg.cluster.unwrap();
        assert_eq!(
            c.nodes,
            vec![
                (1, "10.0.0.1:9093".to_string()),
                (2, "[::1]:9203".to_string()),
                (3, "c.example:9303".to_string())
            ]
        );
        assert_eq!(c.listen, "0.0.0.0:9203".parse::<SocketAddr>().unwrap());
        assert_eq!(c.election_timeout_ms, limits::ELECTION_TIMEOUT_MS_DEFAULT);
        assert!(BrokerConfig::resolve(ServeArgs::default())
            .unwrap()
            .cluster
            .is_none());
        for (spec, why) in [
            ("1@a:1,1@b:2", "named twice"),
            ("1@a:1,2@b:2", "not among them"),
            ("0@a", "HOST:PORT"),
            ("x@a:1", "id must be"),
            ("-1@a:1", "id must be"),
            ("0@a:0", "HOST:PORT"),
            ("0:a:1", "ID@HOST:PORT"),
            (",", "no nodes"),
        ] {
            let e = BrokerConfig::resolve(ServeArgs {
                cluster: Some(spec.into()),
                ..Default::default()
            })
            .unwrap_err()
            .to_string();
            assert!(e.contains(why) && e.contains("--cluster"), "{spec}: {e}");
        }
        let e = BrokerConfig::resolve(ServeArgs {
            election_timeout_ms: Some(1),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("--election-timeout-ms"), "{e}");
        let three = || ServeArgs {
            node_id: Some(1),
            cluster: Some("1@a:1,2@b:1,3@c:1".into()),
            ..Default::default()
        };
        let c = BrokerConfig::resolve(ServeArgs {
            default_replication_factor: Some(2),
            ..three()
        })
        .unwrap();
        assert_eq!(c.cluster.unwrap().default_replication_factor, Some(2));
        for f in [0, 4] {
            let e = BrokerConfig::resolve(ServeArgs {
                default_replication_factor: Some(f),
                ..three()
            })
            .unwrap_err();
            assert!(
                e.to_string().contains("--default-replication-factor"),
                "{e}"
            );
        }
    }

    /// The advertised listener is parsed as HOST:PORT and refused otherwise;
    /// 0.0.0.0 is never advertised.
    #[test]
    fn advertised_listener() {
        let cfg = BrokerConfig::resolve(ServeArgs {
            advertised_listener: Some("broker-1.example:19092".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(cfg.listeners[0].advertised_host, "broker-1.example");
        assert_eq!(cfg.listeners[0].advertised_port, 19092);
        for bad in ["nohost", ":9092", "h:notaport", "SSL://h:1"] {
            assert!(BrokerConfig::resolve(ServeArgs {
                advertised_listener: Some(bad.into()),
                ..Default::default()
            })
            .is_err());
        }
        let cfg = BrokerConfig::resolve(ServeArgs::default()).unwrap();
        assert_ne!(cfg.listeners[0].advertised_host, "0.0.0.0");
        assert_eq!(cfg.listeners[0].advertised_port, 9092);
    }

    /// Listeners with protocols, their advertised addresses in the same
    /// order, and TLS files required exactly when a listener uses TLS.
    #[test]
    fn listeners_with_protocols() {
        let cfg = BrokerConfig::resolve(ServeArgs {
            listen: Some("127.0.0.1:9092,SASL_PLAINTEXT://0.0.0.0:9093".into()),
            advertised_listener: Some("PLAINTEXT://a:1,SASL_PLAINTEXT://b.example:2".into()),
            super_users: Some("admin, User:CN=ops".into()),
            ..Default::default()
        })
        .unwrap();
        let l: Vec<_> = cfg
            .listeners
            .iter()
            .map(|l| {
                (
                    l.protocol,
                    l.addr.port(),
                    l.advertised_host.as_str(),
                    l.advertised_port,
                )
            })
            .collect();
        assert_eq!(
            l,
            [
                (Protocol::Plaintext, 9092, "a", 1),
                (Protocol::SaslPlaintext, 9093, "b.example", 2)
            ]
        );
        assert_eq!(cfg.super_users, ["User:admin", "User:CN=ops"]);
        for (listen, advertised, why) in [
            ("SSL://127.0.0.1:1", None, "needs --tls-cert"),
            ("h:1", None, "not IP:PORT"),
            ("127.0.0.1:1,127.0.0.1:2", None, "two PLAINTEXT"),
            ("127.0.0.1:1", Some("a:1,SSL://b:2"), "2 entries for 1"),
            ("SASL_SSL://127.0.0.1:1", Some("SSL://b:2"), "same order"),
        ] {
            let e = BrokerConfig::resolve(ServeArgs {
                listen: Some(listen.into()),
                advertised_listener: advertised.map(String::from),
                ..Default::default()
            })
            .unwrap_err()
            .to_string();
            assert!(e.contains(why), "{listen}: {e}");
        }
        let e = BrokerConfig::resolve(ServeArgs {
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("no listener is SSL"), "{e}");
    }
}

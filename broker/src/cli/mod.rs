//! The admin CLI in the `sluice` binary: topics, produce, consume,
//! groups and the cluster, against any Kafka-compatible broker (`--bootstrap`), through
//! the blocking client in `sluice_net::client`. Output is a table, or JSON
//! with `--json`; errors say what went wrong and exit non-zero.

mod acl;
mod cluster;
mod consume;
mod group;
pub mod iotune;
mod produce;
pub(crate) mod topic;
pub mod tune;
mod user;

use std::time::Duration;

use sluice_net::client::{Client, ClientError};

pub use acl::AclCommand;
pub use cluster::ClusterCommand;
pub use consume::ConsumeArgs;
pub use group::GroupCommand;
pub use produce::ProduceArgs;
pub use topic::TopicCommand;
pub use user::UserCommand;

/// Options every CLI command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// A broker to talk to (or several, comma-separated: the first
    /// that answers).
    #[arg(
        long,
        global = true,
        env = "SLUICE_BOOTSTRAP",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap: String,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// A failed command: the message is printed and the exit status is 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Usage(String),
}

pub type Result<T> = std::result::Result<T, CliError>;

pub fn topic_run(cmd: TopicCommand, common: &Common) -> Result<String> {
    topic::run(cmd, common)
}

pub fn produce_run(args: ProduceArgs, common: &Common) -> Result<String> {
    produce::run(args, common, std::io::stdin().lock())
}

pub fn consume_run(args: ConsumeArgs, common: &Common) -> Result<String> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let r = consume::run(args, common, &mut out);
    let _ = std::io::Write::flush(&mut out);
    r
}

pub fn cluster_run(cmd: ClusterCommand, common: &Common) -> Result<String> {
    cluster::run(cmd, common)
}

pub fn acl_run(cmd: AclCommand, common: &Common) -> Result<String> {
    acl::run(cmd, common)
}

pub fn user_run(cmd: UserCommand, common: &Common) -> Result<String> {
    user::run(cmd, common)
}

pub fn group_run(cmd: GroupCommand, common: &Common) -> Result<String> {
    group::run(cmd, common)
}

/// A connection to the first of the `--bootstrap` addresses
/// (comma-separated, as Kafka's tools take them) that answers.
pub fn connect(c: &Common) -> Result<Client> {
    let mut last = None;
    for addr in c
        .bootstrap
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        match Client::connect(addr, Duration::from_secs(10)) {
            Ok(client) => return Ok(client),
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(e) => Err(e.into()),
        None => Err(CliError::Refused("no --bootstrap address".into())),
    }
}

/// Connections to each partition's leader, for produce and fetch: the
/// bootstrap connection when the cluster has one node (a single broker,
/// whose advertised address a CLI beside it may not reach), else one
/// connection per leader node, opened when first needed.
pub struct Leaders {
    /// Each partition's leader node.
    leader: Vec<i32>,
    nodes: std::collections::HashMap<i32, String>,
    conns: std::collections::HashMap<i32, Client>,
    single: bool,
}

impl Leaders {
    pub fn of(c: &mut Client, topic: &str) -> Result<Leaders> {
        let (parts, nodes) = topic::describe_partitions(c, topic)?;
        Ok(Leaders {
            leader: parts.iter().map(|p| p.leader).collect(),
            single: nodes.len() <= 1,
            nodes,
            conns: Default::default(),
        })
    }

    /// The leader node of each partition (-1: none).
    pub fn leader(&self, partition: usize) -> i32 {
        self.leader.get(partition).copied().unwrap_or(-1)
    }

    /// The connection to `node`; `boot` for a single broker.
    pub fn client<'a>(&'a mut self, boot: &'a mut Client, node: i32) -> Result<&'a mut Client> {
        if self.single {
            return Ok(boot);
        }
        if !self.conns.contains_key(&node) {
            let addr = self
                .nodes
                .get(&node)
                .ok_or_else(|| CliError::Refused(format!("no leader known (node {node})")))?;
            let c = Client::connect(addr, Duration::from_secs(10))?;
            self.conns.insert(node, c);
        }
        Ok(self.conns.get_mut(&node).expect("inserted"))
    }
}

/// A Kafka error code as a readable name.
pub fn error_name(code: i16) -> String {
    kafka_protocol::ResponseError::try_from_code(code)
        .map(|e| format!("{e:?} ({code})"))
        .unwrap_or_else(|| format!("error {code}"))
}

/// Fails with the message when `code` is an error.
pub fn check(code: i16, what: &str, message: Option<&str>) -> Result<()> {
    if code == 0 {
        return Ok(());
    }
    Err(CliError::Refused(match message {
        Some(m) if !m.is_empty() => format!("{what}: {} ({m})", error_name(code)),
        _ => format!("{what}: {}", error_name(code)),
    }))
}

/// Renders rows as an aligned table with a header line.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(|s| s.as_str()).collect()));
    }
    out
}

/// Parses `key=value`.
pub fn key_value(s: &str) -> std::result::Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?}: expected key=value"))
}

#[cfg(test)]
mod tests {
    /// Columns line up under their headers.
    #[test]
    fn tables_align() {
        let t = super::table(&["A", "LONGER"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    LONGER\nxyz  1\n");
        assert!(super::key_value("a=b=c").unwrap() == ("a".into(), "b=c".into()));
        assert!(super::key_value("=b").is_err());
    }
}

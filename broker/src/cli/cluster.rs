//! `sluice cluster status`: the nodes, which one is the controller, how
//! far behind each node's copy of the metadata log is and when the
//! controller last heard from it, and the partitions that lack in-sync
//! replicas or a leader. Works against any node: the controller is found
//! with DescribeCluster and asked with DescribeQuorum.
//!
//! `sluice cluster reassign` moves a partition's replicas to other nodes
//! (AlterPartitionReassignments; `--cancel` ends a move under way,
//! `--wait` waits until it completes), `sluice cluster reassignments`
//! lists the moves under way (ListPartitionReassignments).

use std::time::Duration;

use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use serde_json::json;

use super::{check, connect, table, CliError, Common, Result};
use sluice_net::client::Client;

#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Nodes, controller, reachability and lag, partitions lacking
    /// replicas or a leader.
    Status {
        /// A node the controller has not heard from for this long is
        /// reported unreachable.
        #[arg(long, default_value_t = 3000)]
        unreachable_after_ms: i64,
    },
    /// Moves a partition's replicas to the nodes given (the first one the
    /// preferred leader), copying its log to the new ones while producers
    /// keep writing, then switching.
    Reassign {
        topic: String,
        #[arg(long)]
        partition: i32,
        /// Node ids, comma-separated.
        #[arg(long, value_delimiter = ',', required_unless_present = "cancel")]
        replicas: Vec<i32>,
        /// Ends the move under way instead (the replicas before it stay).
        #[arg(long, conflicts_with = "replicas")]
        cancel: bool,
        /// Waits until the move completes, and says how long it took.
        #[arg(long)]
        wait: bool,
        /// The longest `--wait` waits, in seconds.
        #[arg(long, default_value_t = 3600)]
        wait_secs: u64,
    },
    /// The reassignments under way: replicas, and those being added and
    /// removed.
    Reassignments,
}

struct Node {
    id: i32,
    addr: Option<String>,
    controller: bool,
    log_end: Option<i64>,
    last_heard_ms: Option<i64>,
}

pub fn run(cmd: ClusterCommand, common: &Common) -> Result<String> {
    match cmd {
        ClusterCommand::Status {
            unreachable_after_ms,
        } => status(unreachable_after_ms, common),
        ClusterCommand::Reassign {
            topic,
            partition,
            replicas,
            cancel,
            wait,
            wait_secs,
        } => {
            let target = (!cancel).then_some(replicas);
            reassign(&topic, partition, target, wait.then_some(wait_secs), common)
        }
        ClusterCommand::Reassignments => {
            let mut c = connect(common)?;
            let moves = reassignments(&mut c)?;
            if common.json {
                let moves: Vec<_> = moves
                    .iter()
                    .map(|m| {
                        json!({"topic": m.0, "partition": m.1, "replicas": m.2,
                            "adding": m.3, "removing": m.4})
                    })
                    .collect();
                return Ok(serde_json::to_string(&moves).unwrap() + "\n");
            }
            let list = |v: &[i32]| {
                v.iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let rows: Vec<Vec<String>> = moves
                .iter()
                .map(|m| {
                    vec![
                        m.0.clone(),
                        m.1.to_string(),
                        list(&m.2),
                        list(&m.3),
                        list(&m.4),
                    ]
                })
                .collect();
            Ok(table(
                &["TOPIC", "PARTITION", "REPLICAS", "ADDING", "REMOVING"],
                &rows,
            ))
        }
    }
}

/// (topic, partition, replicas, adding, removing) of each move under way.
type Move = (String, i32, Vec<i32>, Vec<i32>, Vec<i32>);

fn reassignments(c: &mut Client) -> Result<Vec<Move>> {
    let (_, r): (i16, ListPartitionReassignmentsResponse) =
        c.call(ApiKey::ListPartitionReassignments, (0, 0), |_| {
            ListPartitionReassignmentsRequest::default().with_timeout_ms(30_000)
        })?;
    check(
        r.error_code,
        "list reassignments",
        r.error_message.as_deref(),
    )?;
    let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<i32>>();
    Ok(r.topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.0.to_string(),
                    p.partition_index,
                    ids(&p.replicas),
                    ids(&p.adding_replicas),
                    ids(&p.removing_replicas),
                )
            })
        })
        .collect())
}

fn reassign(
    topic: &str,
    partition: i32,
    target: Option<Vec<i32>>,
    wait_secs: Option<u64>,
    common: &Common,
) -> Result<String> {
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        ReassignablePartition, ReassignableTopic,
    };
    let mut c = connect(common)?;
    let started = std::time::Instant::now();
    let (_, r): (i16, AlterPartitionReassignmentsResponse) =
        c.call(ApiKey::AlterPartitionReassignments, (0, 0), |_| {
            AlterPartitionReassignmentsRequest::default()
                .with_timeout_ms(30_000)
                .with_topics(vec![ReassignableTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(vec![ReassignablePartition::default()
                        .with_partition_index(partition)
                        .with_replicas(
                            target
                                .as_ref()
                                .map(|t| t.iter().map(|&n| BrokerId(n)).collect()),
                        )])])
        })?;
    check(r.error_code, "reassign", r.error_message.as_deref())?;
    for t in &r.responses {
        for p in &t.partitions {
            check(
                p.error_code,
                &format!("reassign {topic}-{partition}"),
                p.error_message.as_deref(),
            )?;
        }
    }
    let what = match &target {
        Some(t) => format!(
            "{topic}-{partition} moving to nodes {}",
            t.iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
        None => format!("{topic}-{partition}: move cancelled"),
    };
    let Some(wait_secs) = wait_secs else {
        return Ok(format!("{what}\n"));
    };
    let deadline = started + Duration::from_secs(wait_secs);
    loop {
        let under_way = reassignments(&mut c)?
            .iter()
            .any(|m| m.0 == topic && m.1 == partition);
        if !under_way {
            let secs = started.elapsed().as_secs_f64();
            if common.json {
                return Ok(serde_json::to_string(&json!({
                    "topic": topic, "partition": partition, "replicas": target,
                    "seconds": secs,
                }))
                .unwrap()
                    + "\n");
            }
            return Ok(format!("{what}: done in {secs:.2} s\n"));
        }
        if std::time::Instant::now() >= deadline {
            return Err(CliError::Refused(format!(
                "{what}: not done within {wait_secs} s (still under way; \
                 `sluice cluster reassignments` shows it)"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status(unreachable_after_ms: i64, common: &Common) -> Result<String> {
    let mut c = connect(common)?;
    let (_, dc): (i16, DescribeClusterResponse) = c.call(ApiKey::DescribeCluster, (0, 1), |v| {
        let r = DescribeClusterRequest::default();
        if v >= 1 {
            r.with_endpoint_type(1)
        } else {
            r
        }
    })?;
    check(
        dc.error_code,
        "describe cluster",
        dc.error_message.as_deref(),
    )?;
    let controller = dc.controller_id.0;
    let mut nodes: Vec<Node> = dc
        .brokers
        .iter()
        .map(|b| Node {
            id: b.broker_id.0,
            addr: Some(format!("{}:{}", b.host, b.port)),
            controller: b.broker_id.0 == controller,
            log_end: None,
            last_heard_ms: None,
        })
        .collect();
    // The quorum as the controller sees it.
    let mut commit = None;
    let mut term = None;
    if let Some(addr) = nodes
        .iter()
        .find(|n| n.controller)
        .and_then(|n| n.addr.clone())
    {
        let mut q = Client::connect(&addr, Duration::from_secs(10))
            .or_else(|_| connect(common))
            .map_err(|e| CliError::Refused(format!("controller {controller} at {addr}: {e}")))?;
        let (_, r): (i16, DescribeQuorumResponse) =
            q.call(ApiKey::DescribeQuorum, (0, 1), |_| {
                DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
                    .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
                    .with_partitions(vec![PartitionData::default().with_partition_index(0)])])
            })?;
        check(r.error_code, "describe quorum", r.error_message.as_deref())?;
        if let Some(p) = r.topics.first().and_then(|t| t.partitions.first()) {
            check(p.error_code, "describe quorum", p.error_message.as_deref())?;
            commit = Some(p.high_watermark);
            term = Some(p.leader_epoch);
            for v in &p.current_voters {
                let i = match nodes.iter().position(|n| n.id == v.replica_id.0) {
                    Some(i) => i,
                    None => {
                        // A voter that has not registered yet.
                        nodes.push(Node {
                            id: v.replica_id.0,
                            addr: None,
                            controller: false,
                            log_end: None,
                            last_heard_ms: None,
                        });
                        nodes.len() - 1
                    }
                };
                nodes[i].log_end = Some(v.log_end_offset);
                nodes[i].last_heard_ms =
                    (v.last_fetch_timestamp >= 0).then_some(v.last_fetch_timestamp);
            }
        }
    }
    nodes.sort_by_key(|n| n.id);
    // Partitions lacking in-sync replicas or a leader.
    let (_, md): (i16, MetadataResponse) = c.call(ApiKey::Metadata, (1, 12), |_| {
        MetadataRequest::default().with_topics(None)
    })?;
    let mut under = Vec::new();
    let mut leaderless = Vec::new();
    for t in &md.topics {
        let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
        for p in &t.partitions {
            if p.leader_id.0 < 0 {
                leaderless.push(format!("{name}-{}", p.partition_index));
            }
            if p.isr_nodes.len() < p.replica_nodes.len() {
                under.push(format!("{name}-{}", p.partition_index));
            }
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let reachable = |n: &Node| match n.last_heard_ms {
        Some(t) => now - t <= unreachable_after_ms,
        None => false,
    };
    let lag = |n: &Node| match (commit, n.log_end) {
        (Some(c), Some(e)) => Some((c - e).max(0)),
        _ => None,
    };
    if common.json {
        let nodes: Vec<_> = nodes
            .iter()
            .map(|n| {
                json!({
                    "id": n.id,
                    "address": n.addr,
                    "controller": n.controller,
                    "reachable": controller >= 0 && reachable(n),
                    "metadata_lag": lag(n),
                    "last_heard_ms_ago": n.last_heard_ms.map(|t| (now - t).max(0)),
                })
            })
            .collect();
        return Ok(serde_json::to_string(&json!({
            "cluster_id": dc.cluster_id.to_string(),
            "controller": (controller >= 0).then_some(controller),
            "metadata_term": term,
            "metadata_committed": commit,
            "nodes": nodes,
            "under_replicated": under,
            "leaderless": leaderless,
        }))
        .unwrap()
            + "\n");
    }
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.id.to_string(),
                n.addr.clone().unwrap_or_else(|| "(not registered)".into()),
                if n.controller { "controller" } else { "" }.to_string(),
                if controller < 0 {
                    "?".into()
                } else if reachable(n) {
                    "yes".into()
                } else {
                    "no".into()
                },
                lag(n).map_or("?".into(), |l| l.to_string()),
                n.last_heard_ms
                    .map_or("never".into(), |t| format!("{} ms ago", (now - t).max(0))),
            ]
        })
        .collect();
    let mut out = format!(
        "cluster {}, controller {}\n",
        dc.cluster_id,
        if controller >= 0 {
            format!(
                "node {controller} (metadata term {}, committed {})",
                term.unwrap_or(-1),
                commit.unwrap_or(-1)
            )
        } else {
            "none (no quorum)".to_string()
        }
    );
    out.push_str(&table(
        &[
            "NODE",
            "ADDRESS",
            "ROLE",
            "REACHABLE",
            "METADATA-LAG",
            "LAST-HEARD",
        ],
        &rows,
    ));
    out.push_str(&format!(
        "under-replicated partitions: {}\nleaderless partitions: {}\n",
        if under.is_empty() {
            "none".to_string()
        } else {
            under.join(", ")
        },
        if leaderless.is_empty() {
            "none".to_string()
        } else {
            leaderless.join(", ")
        },
    ));
    Ok(out)
}

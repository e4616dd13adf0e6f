//! `sluice topic create|list|describe|delete|alter-config`.

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use serde_json::json;

use std::collections::HashMap;
use std::time::Duration;

use super::{check, connect, key_value, table, CliError, Common, Result};
use sluice_net::client::Client;

#[derive(Debug, clap::Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        /// Replicas of each partition on a cluster; default the broker's
        /// (min(3, nodes), or --default-replication-factor).
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        replication_factor: i16,
        /// A topic config, key=value (repeatable).
        #[arg(long = "config", value_parser = key_value)]
        configs: Vec<(String, String)>,
    },
    /// List topics.
    List,
    /// Partitions (with their offsets) and configs of a topic.
    Describe { name: String },
    /// Delete a topic and its data.
    Delete { name: String },
    /// Set (key=value) or delete (key) topic configs.
    AlterConfig {
        name: String,
        #[arg(long = "set", value_parser = key_value)]
        set: Vec<(String, String)>,
        #[arg(long = "delete")]
        delete: Vec<String>,
    },
}

pub fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// Partition count per topic (`names` empty: every topic).
pub fn partitions(c: &mut Client, names: &[String]) -> Result<Vec<(String, i32, i16)>> {
    metadata_partitions(c, names, false)
}

/// `partitions`, letting the broker create a missing topic where it
/// allows that (as a producer client does).
pub fn partitions_creating(c: &mut Client, names: &[String]) -> Result<Vec<(String, i32, i16)>> {
    metadata_partitions(c, names, true)
}

fn metadata_partitions(
    c: &mut Client,
    names: &[String],
    auto_create: bool,
) -> Result<Vec<(String, i32, i16)>> {
    let (v, r): (i16, MetadataResponse) = c.call(ApiKey::Metadata, (1, 12), |v| {
        let req = MetadataRequest::default();
        let req = if v >= 4 {
            req.with_allow_auto_topic_creation(auto_create)
        } else {
            req
        };
        if names.is_empty() {
            req.with_topics(None)
        } else {
            req.with_topics(Some(
                names
                    .iter()
                    .map(|n| {
                        metadata_request::MetadataRequestTopic::default()
                            .with_name(Some(topic_name(n)))
                    })
                    .collect(),
            ))
        }
    })?;
    let _ = v;
    Ok(r.topics
        .into_iter()
        .map(|t| {
            (
                t.name.map(|n| n.0.to_string()).unwrap_or_default(),
                t.partitions.len() as i32,
                t.error_code,
            )
        })
        .collect())
}

/// One partition as Metadata describes it.
#[derive(Debug, Clone, Default)]
pub struct PartitionInfo {
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// Each partition of `topic` (by index) and every node's address.
/// Each broker a Metadata answer names: (id, `host:port`).
pub fn addresses(r: &MetadataResponse) -> Vec<(i32, String)> {
    r.brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
        .collect()
}

pub fn describe_partitions(
    c: &mut Client,
    topic: &str,
) -> Result<(Vec<PartitionInfo>, HashMap<i32, String>)> {
    let (_, r): (i16, MetadataResponse) = c.call(ApiKey::Metadata, (1, 12), |v| {
        let req =
            MetadataRequest::default()
                .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
                )
                .with_name(Some(topic_name(topic)))]));
        if v >= 4 {
            req.with_allow_auto_topic_creation(false)
        } else {
            req
        }
    })?;
    let nodes = addresses(&r).into_iter().collect();
    let t = r
        .topics
        .into_iter()
        .next()
        .ok_or_else(|| CliError::Refused(format!("no topic {topic}")))?;
    check(t.error_code, &format!("describe {topic}"), None)?;
    let mut parts: Vec<PartitionInfo> = vec![PartitionInfo::default(); t.partitions.len()];
    for p in t.partitions {
        if let Some(slot) = parts.get_mut(p.partition_index as usize) {
            *slot = PartitionInfo {
                leader: p.leader_id.0,
                leader_epoch: p.leader_epoch,
                replicas: p.replica_nodes.iter().map(|n| n.0).collect(),
                isr: p.isr_nodes.iter().map(|n| n.0).collect(),
            };
        }
    }
    Ok((parts, nodes))
}

fn list_offsets(
    c: &mut Client,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> Result<Vec<(i32, i16, i64)>> {
    let (_, r): (i16, ListOffsetsResponse) = c.call(ApiKey::ListOffsets, (1, 6), |_| {
        ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|&p| {
                            list_offsets_request::ListOffsetsPartition::default()
                                .with_partition_index(p)
                                .with_timestamp(timestamp)
                        })
                        .collect(),
                )])
    })?;
    Ok(r.topics
        .into_iter()
        .flat_map(|t| t.partitions)
        .map(|p| (p.partition_index, p.error_code, p.offset))
        .collect())
}

/// ListOffsets for every partition of a topic at `timestamp` (-2
/// earliest, -1 latest): asked of the broker `c` talks to, and, for the
/// partitions another node of a cluster leads, of their leaders.
pub fn offsets(c: &mut Client, topic: &str, count: i32, timestamp: i64) -> Result<Vec<i64>> {
    let all: Vec<i32> = (0..count).collect();
    let mut out = vec![-1; count as usize];
    let mut elsewhere = Vec::new();
    for (p, code, offset) in list_offsets(c, topic, &all, timestamp)? {
        if code == kafka_protocol::ResponseError::NotLeaderOrFollower.code() {
            elsewhere.push(p);
            continue;
        }
        check(code, &format!("offsets of {topic}-{p}"), None)?;
        if let Some(o) = out.get_mut(p as usize) {
            *o = offset;
        }
    }
    if elsewhere.is_empty() {
        return Ok(out);
    }
    let (parts, nodes) = describe_partitions(c, topic)?;
    let mut by_leader: HashMap<i32, Vec<i32>> = HashMap::new();
    for p in elsewhere {
        let leader = parts.get(p as usize).map_or(-1, |i| i.leader);
        by_leader.entry(leader).or_default().push(p);
    }
    for (leader, ps) in by_leader {
        let addr = nodes.get(&leader).ok_or_else(|| {
            CliError::Refused(format!(
                "offsets of {topic}-{}: no leader known (node {leader})",
                ps[0]
            ))
        })?;
        let mut lc = Client::connect(addr, Duration::from_secs(10))?;
        for (p, code, offset) in list_offsets(&mut lc, topic, &ps, timestamp)? {
            check(
                code,
                &format!("offsets of {topic}-{p} at node {leader}"),
                None,
            )?;
            if let Some(o) = out.get_mut(p as usize) {
                *o = offset;
            }
        }
    }
    Ok(out)
}

pub fn run(cmd: TopicCommand, common: &Common) -> Result<String> {
    let mut c = connect(common)?;
    match cmd {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            let (_, r): (i16, CreateTopicsResponse) =
                c.call(ApiKey::CreateTopics, (2, 7), |_| {
                    CreateTopicsRequest::default()
                        .with_timeout_ms(30_000)
                        .with_topics(vec![create_topics_request::CreatableTopic::default()
                            .with_name(topic_name(&name))
                            .with_num_partitions(partitions)
                            .with_replication_factor(replication_factor)
                            .with_configs(
                                configs
                                    .iter()
                                    .map(|(k, v)| {
                                        create_topics_request::CreatableTopicConfig::default()
                                            .with_name(StrBytes::from_string(k.clone()))
                                            .with_value(Some(StrBytes::from_string(v.clone())))
                                    })
                                    .collect(),
                            )])
                })?;
            let t = &r.topics[0];
            check(
                t.error_code,
                &format!("create {name}"),
                t.error_message.as_deref(),
            )?;
            Ok(if common.json {
                json!({"created": name, "partitions": partitions}).to_string() + "\n"
            } else {
                format!("created topic {name} with {partitions} partition(s)\n")
            })
        }
        TopicCommand::List => {
            let mut topics = partitions(&mut c, &[])?;
            topics.sort();
            Ok(if common.json {
                let v: Vec<_> = topics
                    .iter()
                    .map(|(n, p, _)| json!({"name": n, "partitions": p}))
                    .collect();
                serde_json::to_string(&v).unwrap() + "\n"
            } else {
                let rows: Vec<Vec<String>> = topics
                    .into_iter()
                    .map(|(n, p, _)| vec![n, p.to_string()])
                    .collect();
                table(&["TOPIC", "PARTITIONS"], &rows)
            })
        }
        TopicCommand::Describe { name } => {
            let found = partitions(&mut c, std::slice::from_ref(&name))?;
            let (_, count, code) = found
                .into_iter()
                .next()
                .ok_or_else(|| CliError::Refused(format!("no topic {name}")))?;
            check(code, &format!("describe {name}"), None)?;
            let start = offsets(&mut c, &name, count, -2)?;
            let end = offsets(&mut c, &name, count, -1)?;
            let (info, _) = describe_partitions(&mut c, &name)?;
            let info = |p: usize| info.get(p).cloned().unwrap_or_default();
            let ids = |v: &[i32]| {
                v.iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let (_, r): (i16, DescribeConfigsResponse) =
                c.call(ApiKey::DescribeConfigs, (1, 4), |_| {
                    DescribeConfigsRequest::default().with_resources(vec![
                        describe_configs_request::DescribeConfigsResource::default()
                            .with_resource_type(2)
                            .with_resource_name(StrBytes::from_string(name.clone()))
                            .with_configuration_keys(None),
                    ])
                })?;
            let res = &r.results[0];
            check(
                res.error_code,
                &format!("configs of {name}"),
                res.error_message.as_deref(),
            )?;
            let configs: Vec<(String, String)> = res
                .configs
                .iter()
                .map(|c| {
                    (
                        c.name.to_string(),
                        c.value.as_deref().unwrap_or("").to_string(),
                    )
                })
                .collect();
            Ok(if common.json {
                json!({
                    "name": name,
                    "partitions": (0..count as usize).map(|p| {
                        let i = info(p);
                        json!({"partition": p, "leader": i.leader, "leader_epoch": i.leader_epoch,
                            "replicas": i.replicas, "isr": i.isr, "log_start_offset": start[p],
                            "high_watermark": end[p], "messages": end[p] - start[p]})
                    }).collect::<Vec<_>>(),
                    "configs": configs.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
                })
                .to_string()
                    + "\n"
            } else {
                let rows: Vec<Vec<String>> = (0..count as usize)
                    .map(|p| {
                        let i = info(p);
                        vec![
                            p.to_string(),
                            i.leader.to_string(),
                            i.leader_epoch.to_string(),
                            ids(&i.replicas),
                            ids(&i.isr),
                            start[p].to_string(),
                            end[p].to_string(),
                            (end[p] - start[p]).to_string(),
                        ]
                    })
                    .collect();
                let mut out = format!("topic {name}: {count} partition(s)\n");
                out += &table(
                    &[
                        "PARTITION",
                        "LEADER",
                        "EPOCH",
                        "REPLICAS",
                        "ISR",
                        "START",
                        "END",
                        "MESSAGES",
                    ],
                    &rows,
                );
                out += "\n";
                let rows: Vec<Vec<String>> = configs.into_iter().map(|(k, v)| vec![k, v]).collect();
                out += &table(&["CONFIG", "VALUE"], &rows);
                out
            })
        }
        TopicCommand::Delete { name } => {
            let (_, r): (i16, DeleteTopicsResponse) =
                c.call(ApiKey::DeleteTopics, (1, 6), |v| {
                    let req = DeleteTopicsRequest::default().with_timeout_ms(30_000);
                    if v >= 6 {
                        req.with_topics(vec![delete_topics_request::DeleteTopicState::default()
                            .with_name(Some(topic_name(&name)))])
                    } else {
                        req.with_topic_names(vec![topic_name(&name)])
                    }
                })?;
            let t = &r.responses[0];
            check(
                t.error_code,
                &format!("delete {name}"),
                t.error_message.as_deref(),
            )?;
            Ok(if common.json {
                json!({"deleted": name}).to_string() + "\n"
            } else {
                format!("deleted topic {name}\n")
            })
        }
        TopicCommand::AlterConfig { name, set, delete } => {
            if set.is_empty() && delete.is_empty() {
                return Err(CliError::Usage(
                    "nothing to change: give --set key=value or --delete key".into(),
                ));
            }
            let (_, r): (i16, IncrementalAlterConfigsResponse) =
                c.call(ApiKey::IncrementalAlterConfigs, (0, 1), |_| {
                    let mut ops: Vec<_> = set
                        .iter()
                        .map(|(k, v)| {
                            incremental_alter_configs_request::AlterableConfig::default()
                                .with_name(StrBytes::from_string(k.clone()))
                                .with_config_operation(0)
                                .with_value(Some(StrBytes::from_string(v.clone())))
                        })
                        .collect();
                    ops.extend(delete.iter().map(|k| {
                        incremental_alter_configs_request::AlterableConfig::default()
                            .with_name(StrBytes::from_string(k.clone()))
                            .with_config_operation(1)
                            .with_value(None)
                    }));
                    IncrementalAlterConfigsRequest::default().with_resources(vec![
                        incremental_alter_configs_request::AlterConfigsResource::default()
                            .with_resource_type(2)
                            .with_resource_name(StrBytes::from_string(name.clone()))
                            .with_configs(ops),
                    ])
                })?;
            let res = &r.responses[0];
            check(
                res.error_code,
                &format!("alter configs of {name}"),
                res.error_message.as_deref(),
            )?;
            Ok(if common.json {
                json!({"altered": name}).to_string() + "\n"
            } else {
                format!("altered configs of topic {name}\n")
            })
        }
    }
}

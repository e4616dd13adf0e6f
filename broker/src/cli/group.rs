//! `sluice group list|describe|delete|reset-offsets`.

use std::collections::BTreeMap;

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use serde_json::json;
use sluice_net::client::Client;

use super::topic::{offsets, partitions, topic_name};
use super::{check, connect, CliError, Common, Result};

#[derive(Debug, clap::Subcommand)]
pub enum GroupCommand {
    /// List groups.
    List,
    /// Members, assignments, committed offsets and lag of a group.
    Describe { group: String },
    /// Delete a group without members, and its committed offsets.
    Delete { group: String },
    /// Set a group's committed offsets for a topic (the group must have no
    /// members).
    ResetOffsets {
        group: String,
        #[arg(long)]
        topic: String,
        /// earliest, latest, or an offset.
        #[arg(long)]
        to: String,
    },
}

fn gid(g: &str) -> GroupId {
    GroupId(StrBytes::from_string(g.to_string()))
}

/// A group's committed offsets for every partition of a topic (-1: none).
pub fn committed(c: &mut Client, group: &str, topic: &str, count: i32) -> Result<Vec<i64>> {
    let (_, r): (i16, OffsetFetchResponse) = c.call(ApiKey::OffsetFetch, (1, 7), |_| {
        OffsetFetchRequest::default()
            .with_group_id(gid(group))
            .with_topics(Some(vec![
                offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(topic_name(topic))
                    .with_partition_indexes((0..count).collect()),
            ]))
    })?;
    check(r.error_code, &format!("offsets of group {group}"), None)?;
    let mut out = vec![-1; count as usize];
    for t in r.topics {
        for p in t.partitions {
            if let Some(o) = out.get_mut(p.partition_index as usize) {
                *o = p.committed_offset;
            }
        }
    }
    Ok(out)
}

/// All of a group's committed offsets: topic -> partition -> offset.
fn all_committed(c: &mut Client, group: &str) -> Result<BTreeMap<String, BTreeMap<i32, i64>>> {
    let (_, r): (i16, OffsetFetchResponse) = c.call(ApiKey::OffsetFetch, (2, 7), |_| {
        OffsetFetchRequest::default()
            .with_group_id(gid(group))
            .with_topics(None)
    })?;
    check(r.error_code, &format!("offsets of group {group}"), None)?;
    let mut out: BTreeMap<String, BTreeMap<i32, i64>> = BTreeMap::new();
    for t in r.topics {
        for p in t.partitions {
            if p.committed_offset >= 0 {
                out.entry(t.name.0.to_string())
                    .or_default()
                    .insert(p.partition_index, p.committed_offset);
            }
        }
    }
    Ok(out)
}

/// Commits offsets for a group from outside group management.
pub fn commit(c: &mut Client, group: &str, topic: &str, offsets: &[i64]) -> Result<()> {
    let (_, r): (i16, OffsetCommitResponse) = c.call(ApiKey::OffsetCommit, (2, 8), |_| {
        OffsetCommitRequest::default()
            .with_group_id(gid(group))
            .with_generation_id_or_member_epoch(-1)
            .with_group_instance_id(None)
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(topic_name(topic))
                    .with_partitions(
                        offsets
                            .iter()
                            .enumerate()
                            .map(|(p, &o)| {
                                offset_commit_request::OffsetCommitRequestPartition::default()
                                    .with_partition_index(p as i32)
                                    .with_committed_offset(o)
                            })
                            .collect(),
                    ),
            ])
    })?;
    for t in r.topics {
        for p in t.partitions {
            check(
                p.error_code,
                &format!("commit {group} {topic}-{}", p.partition_index),
                None,
            )?;
        }
    }
    Ok(())
}

/// The topics and partitions of a ConsumerProtocolAssignment.
fn assignment(b: &[u8]) -> Vec<(String, Vec<i32>)> {
    let mut out = Vec::new();
    let i32_at = |at: usize| {
        b.get(at..at + 4)
            .map(|x| i32::from_be_bytes(x.try_into().unwrap()))
    };
    let Some(n) = i32_at(2) else { return out };
    let mut at = 6;
    for _ in 0..n.clamp(0, 100_000) {
        let Some(len) = b
            .get(at..at + 2)
            .map(|x| i16::from_be_bytes(x.try_into().unwrap()))
        else {
            break;
        };
        let Some(name) = b.get(at + 2..at + 2 + len.max(0) as usize) else {
            break;
        };
        at += 2 + len.max(0) as usize;
        let Some(np) = i32_at(at) else { break };
        at += 4;
        let mut parts = Vec::new();
        for _ in 0..np.clamp(0, 100_000) {
            let Some(p) = i32_at(at) else { break };
            parts.push(p);
            at += 4;
        }
        out.push((String::from_utf8_lossy(name).into_owned(), parts));
    }
    out
}

/// The brokers of the cluster `boot` belongs to: (id, host:port).
fn brokers(boot: &mut Client) -> Result<Vec<(i32, String)>> {
    let (_, md): (i16, MetadataResponse) = boot.call(ApiKey::Metadata, (1, 12), |_| {
        MetadataRequest::default().with_topics(Some(vec![]))
    })?;
    Ok(super::topic::addresses(&md))
}

/// The connection to `group`'s coordinator: `boot` on a single broker
/// (whose advertised address a CLI beside it may not reach), else the
/// node FindCoordinator names.
fn coordinator(mut boot: Client, group: &str) -> Result<Client> {
    if brokers(&mut boot)?.len() <= 1 {
        return Ok(boot);
    }
    let (_, r): (i16, FindCoordinatorResponse) =
        boot.call(ApiKey::FindCoordinator, (1, 3), |_| {
            FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.to_string()))
        })?;
    check(
        r.error_code,
        &format!("coordinator of group {group}"),
        r.error_message.as_deref(),
    )?;
    Ok(Client::connect(
        &format!("{}:{}", r.host, r.port),
        std::time::Duration::from_secs(10),
    )?)
}

pub fn run(cmd: GroupCommand, common: &Common) -> Result<String> {
    let c = connect(common)?;
    let mut c = match &cmd {
        GroupCommand::List => c,
        GroupCommand::Describe { group }
        | GroupCommand::Delete { group }
        | GroupCommand::ResetOffsets { group, .. } => coordinator(c, group)?,
    };
    match cmd {
        GroupCommand::List => {
            // Every node lists the groups it coordinates.
            let nodes = brokers(&mut c)?;
            let mut groups: Vec<(String, String, String)> = Vec::new();
            let mut others: Vec<Client> = Vec::new();
            if nodes.len() > 1 {
                for (id, addr) in &nodes {
                    match Client::connect(addr, std::time::Duration::from_secs(10)) {
                        Ok(n) => others.push(n),
                        // A node that is down: say so, list the others.
                        Err(e) => eprintln!(
                            "sluice: node {id} ({addr}) not reachable, its groups not listed: {e}"
                        ),
                    }
                }
            }
            let clients: Vec<&mut Client> = if others.is_empty() {
                vec![&mut c]
            } else {
                others.iter_mut().collect()
            };
            for n in clients {
                let (_, r): (i16, ListGroupsResponse) =
                    n.call(ApiKey::ListGroups, (0, 4), |_| ListGroupsRequest::default())?;
                check(r.error_code, "list groups", None)?;
                groups.extend(r.groups.into_iter().map(|g| {
                    (
                        g.group_id.0.to_string(),
                        g.group_state.to_string(),
                        g.protocol_type.to_string(),
                    )
                }));
            }
            groups.sort();
            groups.dedup();
            Ok(if common.json {
                serde_json::to_string(
                    &groups
                        .iter()
                        .map(|(g, s, t)| json!({"group": g, "state": s, "protocol_type": t}))
                        .collect::<Vec<_>>(),
                )
                .unwrap()
                    + "\n"
            } else {
                let rows: Vec<Vec<String>> =
                    groups.into_iter().map(|(g, s, t)| vec![g, s, t]).collect();
                super::table(&["GROUP", "STATE", "TYPE"], &rows)
            })
        }
        GroupCommand::Describe { group } => {
            let (_, r): (i16, DescribeGroupsResponse) =
                c.call(ApiKey::DescribeGroups, (0, 5), |_| {
                    DescribeGroupsRequest::default().with_groups(vec![gid(&group)])
                })?;
            let d = &r.groups[0];
            check(
                d.error_code,
                &format!("describe {group}"),
                d.error_message.as_deref(),
            )?;
            if d.group_state.as_str() == "Dead" {
                return Err(CliError::Refused(format!("no group {group}")));
            }
            let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
            let mut members = Vec::new();
            for m in &d.members {
                let a = assignment(&m.member_assignment);
                for (t, ps) in &a {
                    for p in ps {
                        owner.insert((t.clone(), *p), m.member_id.to_string());
                    }
                }
                members.push((
                    m.member_id.to_string(),
                    m.client_id.to_string(),
                    m.client_host.to_string(),
                    a,
                ));
            }
            let committed = all_committed(&mut c, &group)?;
            let mut lag_rows = Vec::new();
            for (topic, parts) in &committed {
                let count = partitions(&mut c, std::slice::from_ref(topic))?
                    .first()
                    .map(|t| t.1)
                    .unwrap_or(0);
                let ends = offsets(&mut c, topic, count, -1)?;
                for (&p, &o) in parts {
                    let end = ends.get(p as usize).copied().unwrap_or(-1);
                    lag_rows.push((
                        topic.clone(),
                        p,
                        o,
                        end,
                        (end - o).max(0),
                        owner.get(&(topic.clone(), p)).cloned().unwrap_or_default(),
                    ));
                }
            }
            Ok(if common.json {
                json!({
                    "group": group,
                    "state": d.group_state.as_str(),
                    "protocol": d.protocol_data.as_str(),
                    "members": members.iter().map(|(id, client, host, a)| json!({
                        "member_id": id, "client_id": client, "host": host,
                        "assignment": a.iter().map(|(t, ps)| json!({"topic": t, "partitions": ps})).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                    "offsets": lag_rows.iter().map(|(t, p, o, e, lag, m)| json!({
                        "topic": t, "partition": p, "committed": o, "end": e, "lag": lag, "member": m,
                    })).collect::<Vec<_>>(),
                })
                .to_string()
                    + "\n"
            } else {
                let mut out = format!(
                    "group {group}: {} ({} member(s), protocol {})\n",
                    d.group_state.as_str(),
                    members.len(),
                    d.protocol_data.as_str()
                );
                let rows: Vec<Vec<String>> = members
                    .iter()
                    .map(|(id, client, host, a)| {
                        let parts = a
                            .iter()
                            .map(|(t, ps)| {
                                format!(
                                    "{t}:{}",
                                    ps.iter()
                                        .map(|p| p.to_string())
                                        .collect::<Vec<_>>()
                                        .join(",")
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(" ");
                        vec![id.clone(), client.clone(), host.clone(), parts]
                    })
                    .collect();
                out += &super::table(&["MEMBER", "CLIENT", "HOST", "ASSIGNMENT"], &rows);
                out += "\n";
                let rows: Vec<Vec<String>> = lag_rows
                    .into_iter()
                    .map(|(t, p, o, e, lag, m)| {
                        vec![
                            t,
                            p.to_string(),
                            o.to_string(),
                            e.to_string(),
                            lag.to_string(),
                            m,
                        ]
                    })
                    .collect();
                out += &super::table(
                    &["TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "MEMBER"],
                    &rows,
                );
                out
            })
        }
        GroupCommand::Delete { group } => {
            let (_, r): (i16, DeleteGroupsResponse) =
                c.call(ApiKey::DeleteGroups, (0, 2), |_| {
                    DeleteGroupsRequest::default().with_groups_names(vec![gid(&group)])
                })?;
            check(
                r.results[0].error_code,
                &format!("delete group {group}"),
                None,
            )?;
            Ok(if common.json {
                json!({"deleted": group}).to_string() + "\n"
            } else {
                format!("deleted group {group}\n")
            })
        }
        GroupCommand::ResetOffsets { group, topic, to } => {
            let count = match partitions(&mut c, std::slice::from_ref(&topic))?.first() {
                Some((_, n, 0)) if *n > 0 => *n,
                _ => return Err(CliError::Refused(format!("no topic {topic}"))),
            };
            let target: Vec<i64> = match to.as_str() {
                "earliest" => offsets(&mut c, &topic, count, -2)?,
                "latest" => offsets(&mut c, &topic, count, -1)?,
                n => {
                    let n: i64 = n.parse().map_err(|_| {
                        CliError::Usage(format!(
                            "--to {n:?}: expected earliest, latest or an offset"
                        ))
                    })?;
                    vec![n; count as usize]
                }
            };
            commit(&mut c, &group, &topic, &target)?;
            Ok(if common.json {
                json!({"group": group, "topic": topic, "offsets": target}).to_string() + "\n"
            } else {
                let rows: Vec<Vec<String>> = target
                    .iter()
                    .enumerate()
                    .map(|(p, o)| vec![p.to_string(), o.to_string()])
                    .collect();
                format!("reset group {group} on {topic}\n")
                    + &super::table(&["PARTITION", "OFFSET"], &rows)
            })
        }
    }
}

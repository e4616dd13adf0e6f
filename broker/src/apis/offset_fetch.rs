//! OffsetFetch: committed offsets of one group (v0-7) or several (v8),
//! for the partitions asked or, with none named, every partition the
//! group committed. A partition without a commit answers offset -1.

use crate::security::acl::Operation;
use crate::security::Authz;
use std::rc::Rc;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    GroupId, OffsetFetchRequest, OffsetFetchResponse, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_net::response::ResponseChunks;

use super::Ctx;
use crate::groups::offsets::Committed;
use crate::shard::Shard;

/// (topic, partition, committed)
type Found = Vec<(String, i32, Option<Committed>)>;

/// The group's commits, as far as the ACLs let the principal see them:
/// DESCRIBE on the group, and on each topic (a topic named but not
/// allowed answers TOPIC_AUTHORIZATION_FAILED per partition; one not
/// named is left out).
async fn lookup(
    shard: &Rc<Shard>,
    group: String,
    wanted: Option<Vec<(String, Vec<i32>)>>,
    authz: &Authz<'_>,
) -> Result<Vec<TopicOffsets>, i16> {
    if !authz.group(Operation::Describe, &group) {
        return Err(ResponseError::GroupAuthorizationFailed.code());
    }
    let named = wanted.is_some();
    let found = commits(shard, group, wanted).await?;
    let mut out = by_topic(found);
    if named {
        for (t, parts) in &mut out {
            if !authz.topic(Operation::Describe, t) {
                for (_, c, code) in parts.iter_mut() {
                    c.offset = -1;
                    c.metadata = Some(String::new());
                    *code = ResponseError::TopicAuthorizationFailed.code();
                }
            }
        }
    } else {
        out.retain(|(t, _)| authz.topic(Operation::Describe, t));
    }
    Ok(out)
}

async fn commits(
    shard: &Rc<Shard>,
    group: String,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> Result<Found, i16> {
    let owner = shard.group_owner(&group);
    shard
        .call_coordinator(owner, move |c| async move {
            // A commit the group accepted is seen by every later fetch.
            c.wait_for_commits(&group).await;
            match wanted {
                Some(topics) => topics
                    .into_iter()
                    .flat_map(|(t, parts)| parts.into_iter().map(move |p| (t.clone(), p)))
                    .map(|(t, p)| {
                        let got = c.committed(&(group.clone(), t.clone(), p));
                        (t, p, got)
                    })
                    .collect(),
                None => c
                    .offsets
                    .of_group(&group)
                    .into_iter()
                    .map(|(t, p, c)| (t, p, Some(c)))
                    .collect(),
            }
        })
        .await
        .map_err(|_| ResponseError::CoordinatorNotAvailable.code())
}

/// A topic's partitions, their commits (offset -1 where none) and error
/// codes.
type TopicOffsets = (String, Vec<(i32, Committed, i16)>);

/// Groups consecutive entries of the same topic.
fn by_topic(found: Found) -> Vec<TopicOffsets> {
    let mut out: Vec<TopicOffsets> = Vec::new();
    for (t, p, c) in found {
        let c = c.unwrap_or(Committed {
            offset: -1,
            leader_epoch: -1,
            metadata: Some(String::new()),
            commit_time_ms: -1,
        });
        match out.last_mut() {
            Some((name, parts)) if *name == t => parts.push((p, c, 0)),
            _ => out.push((t, vec![(p, c, 0)])),
        }
    }
    out
}

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: Ctx,
    req: OffsetFetchRequest,
    authz: &Authz<'_>,
) -> ResponseChunks {
    let s = StrBytes::from_string;
    if ctx.version >= 8 {
        let mut groups = Vec::new();
        for g in req.groups {
            let wanted = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes))
                    .collect()
            });
            let out = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
            groups.push(
                match lookup(shard, g.group_id.0.to_string(), wanted, authz).await {
                    Err(code) => out.with_error_code(code),
                    Ok(found) => out.with_topics(
                        found
                            .into_iter()
                            .map(|(t, parts)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(TopicName(s(t)))
                                    .with_partitions(
                                        parts
                                            .into_iter()
                                            .map(|(p, c, code)| {
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(p)
                                                    .with_error_code(code)
                                                    .with_committed_offset(c.offset)
                                                    .with_committed_leader_epoch(c.leader_epoch)
                                                    .with_metadata(c.metadata.map(s))
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    ),
                },
            );
        }
        return ctx.answer(ResponseKind::OffsetFetch(
            OffsetFetchResponse::default().with_groups(groups),
        ));
    }
    let group: GroupId = req.group_id;
    let wanted = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let out = OffsetFetchResponse::default();
    let out = match lookup(shard, group.0.to_string(), wanted, authz).await {
        Err(code) if ctx.version >= 2 => out.with_error_code(code),
        Err(_) => out,
        Ok(found) => out.with_topics(
            found
                .into_iter()
                .map(|(t, parts)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(s(t)))
                        .with_partitions(
                            parts
                                .into_iter()
                                .map(|(p, c, code)| {
                                    let leader_epoch =
                                        if ctx.version >= 5 { c.leader_epoch } else { -1 };
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_error_code(code)
                                        .with_committed_offset(c.offset)
                                        .with_committed_leader_epoch(leader_epoch)
                                        .with_metadata(c.metadata.map(s))
                                })
                                .collect(),
                        )
                })
                .collect(),
        ),
    };
    ctx.answer(ResponseKind::OffsetFetch(out))
}

//! A consumer-group member for glommio executors (the classic protocol):
//! join, the leader's range assignment of one topic, sync, heartbeats,
//! leave. Committing offsets is left to the caller.

use bytes::{BufMut, Bytes, BytesMut};
use glommio::net::TcpStream;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::aio::call;
use crate::client::ClientError;

const JOIN_VERSION: i16 = 5;
const SYNC_VERSION: i16 = 3;
const HEARTBEAT_VERSION: i16 = 3;
const LEAVE_VERSION: i16 = 3;
const COMMIT_VERSION: i16 = 5;
const MEMBER_ID_REQUIRED: i16 = 79;
const REBALANCE_IN_PROGRESS: i16 = 27;
const UNKNOWN_MEMBER_ID: i16 = 25;
const ILLEGAL_GENERATION: i16 = 22;

/// A consumer subscription (ConsumerProtocolSubscription v0) to `topics`.
pub fn subscription(topics: &[&str]) -> Bytes {
    let mut m = BytesMut::new();
    m.put_i16(0);
    m.put_i32(topics.len() as i32);
    for t in topics {
        m.put_i16(t.len() as i16);
        m.put_slice(t.as_bytes());
    }
    m.put_i32(-1);
    m.freeze()
}

/// A consumer assignment (ConsumerProtocolAssignment v0) of `partitions`
/// of `topic`.
pub fn assignment(topic: &str, partitions: &[i32]) -> Bytes {
    let mut a = BytesMut::new();
    a.put_i16(0);
    a.put_i32(1);
    a.put_i16(topic.len() as i16);
    a.put_slice(topic.as_bytes());
    a.put_i32(partitions.len() as i32);
    for p in partitions {
        a.put_i32(*p);
    }
    a.put_i32(-1);
    a.freeze()
}

/// The partitions of the first topic in an assignment; empty when it
/// cannot be read.
pub fn assigned_partitions(a: &[u8]) -> Vec<i32> {
    let rd = |at: usize, n: usize| a.get(at..at + n);
    let Some(tl) = rd(6, 2) else {
        return Vec::new();
    };
    let tl = i16::from_be_bytes([tl[0], tl[1]]).max(0) as usize;
    let at = 8 + tl;
    let Some(n) = rd(at, 4) else {
        return Vec::new();
    };
    let n = i32::from_be_bytes(n.try_into().expect("4 bytes")).max(0) as usize;
    (0..n)
        .map_while(|i| {
            rd(at + 4 + 4 * i, 4).map(|b| i32::from_be_bytes(b.try_into().expect("4 bytes")))
        })
        .collect()
}

/// Kafka's range assignment of partitions 0..partitions to `members`
/// (sorted by id): contiguous ranges, the first members one larger.
pub fn range_assign(members: &[String], partitions: i32) -> Vec<(String, Vec<i32>)> {
    let mut ids: Vec<String> = members.to_vec();
    ids.sort();
    let m = ids.len().max(1) as i32;
    let (per, extra) = (partitions / m, partitions % m);
    let mut next = 0;
    ids.into_iter()
        .enumerate()
        .map(|(i, id)| {
            let n = per + i32::from((i as i32) < extra);
            let parts: Vec<i32> = (next..next + n).collect();
            next += n;
            (id, parts)
        })
        .collect()
}

pub struct GroupMember {
    addr: String,
    stream: TcpStream,
    group: GroupId,
    topic: String,
    member_id: String,
    generation: i32,
    next_id: i32,
    pub session_timeout_ms: i32,
}

impl GroupMember {
    /// Connects to the group's coordinator at `addr`.
    pub async fn connect(addr: &str, group: &str, topic: &str) -> Result<GroupMember, ClientError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| ClientError::Connect(addr.to_string(), e.into()))?;
        let _ = stream.set_nodelay(true);
        Ok(GroupMember {
            addr: addr.to_string(),
            stream,
            group: GroupId(StrBytes::from_string(group.to_string())),
            topic: topic.to_string(),
            member_id: String::new(),
            generation: -1,
            next_id: 0,
            session_timeout_ms: 30_000,
        })
    }

    fn id(&mut self) -> i32 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    /// Joins (or rejoins) and returns this member's partitions of the
    /// topic, which has `partitions` partitions.
    pub async fn join(&mut self, partitions: i32) -> Result<Vec<i32>, ClientError> {
        let err = |what: &str, code: i16| {
            ClientError::Protocol(format!(
                "{what}: {}",
                kafka_protocol::ResponseError::try_from_code(code)
                    .map_or(format!("error {code}"), |e| format!("{e:?}"))
            ))
        };
        for _ in 0..20 {
            let id = self.id();
            let req = JoinGroupRequest::default()
                .with_group_id(self.group.clone())
                .with_session_timeout_ms(self.session_timeout_ms)
                .with_rebalance_timeout_ms(self.session_timeout_ms)
                .with_member_id(StrBytes::from_string(self.member_id.clone()))
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str("range"))
                    .with_metadata(subscription(&[&self.topic]))]);
            let j: JoinGroupResponse = call(
                &mut self.stream,
                &self.addr,
                ApiKey::JoinGroup,
                JOIN_VERSION,
                id,
                &req,
            )
            .await?;
            match j.error_code {
                0 => {}
                MEMBER_ID_REQUIRED => {
                    self.member_id = j.member_id.to_string();
                    continue;
                }
                UNKNOWN_MEMBER_ID => {
                    self.member_id.clear();
                    continue;
                }
                REBALANCE_IN_PROGRESS => continue,
                e => return Err(err("JoinGroup", e)),
            }
            self.member_id = j.member_id.to_string();
            self.generation = j.generation_id;
            let assignments = if j.leader == j.member_id {
                let members: Vec<String> =
                    j.members.iter().map(|m| m.member_id.to_string()).collect();
                range_assign(&members, partitions)
                    .into_iter()
                    .map(|(m, parts)| {
                        SyncGroupRequestAssignment::default()
                            .with_member_id(StrBytes::from_string(m))
                            .with_assignment(assignment(&self.topic, &parts))
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let id = self.id();
            let req = SyncGroupRequest::default()
                .with_group_id(self.group.clone())
                .with_generation_id(self.generation)
                .with_member_id(StrBytes::from_string(self.member_id.clone()))
                .with_assignments(assignments);
            let s: SyncGroupResponse = call(
                &mut self.stream,
                &self.addr,
                ApiKey::SyncGroup,
                SYNC_VERSION,
                id,
                &req,
            )
            .await?;
            match s.error_code {
                0 => return Ok(assigned_partitions(&s.assignment)),
                REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION => continue,
                UNKNOWN_MEMBER_ID => {
                    self.member_id.clear();
                    continue;
                }
                e => return Err(err("SyncGroup", e)),
            }
        }
        Err(ClientError::Protocol(format!(
            "group {}: no stable generation after 20 joins",
            self.group.0
        )))
    }

    /// One heartbeat; true when the group is rebalancing (join again).
    pub async fn heartbeat(&mut self) -> Result<bool, ClientError> {
        let id = self.id();
        let req = HeartbeatRequest::default()
            .with_group_id(self.group.clone())
            .with_generation_id(self.generation)
            .with_member_id(StrBytes::from_string(self.member_id.clone()));
        let r: HeartbeatResponse = call(
            &mut self.stream,
            &self.addr,
            ApiKey::Heartbeat,
            HEARTBEAT_VERSION,
            id,
            &req,
        )
        .await?;
        match r.error_code {
            0 => Ok(false),
            REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION | UNKNOWN_MEMBER_ID => Ok(true),
            e => Err(ClientError::Protocol(format!("Heartbeat: error {e}"))),
        }
    }

    /// Commits `offsets` (partition, next offset) of the topic for this
    /// generation; true when the group is rebalancing instead (join, then
    /// commit what is assigned then).
    pub async fn commit(&mut self, offsets: &[(i32, i64)]) -> Result<bool, ClientError> {
        if offsets.is_empty() {
            return Ok(false);
        }
        let id = self.id();
        let req = OffsetCommitRequest::default()
            .with_group_id(self.group.clone())
            .with_generation_id_or_member_epoch(self.generation)
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_string(self.topic.clone())))
                    .with_partitions(
                        offsets
                            .iter()
                            .map(|(p, o)| {
                                offset_commit_request::OffsetCommitRequestPartition::default()
                                    .with_partition_index(*p)
                                    .with_committed_offset(*o)
                            })
                            .collect(),
                    ),
            ]);
        let r: OffsetCommitResponse = call(
            &mut self.stream,
            &self.addr,
            ApiKey::OffsetCommit,
            COMMIT_VERSION,
            id,
            &req,
        )
        .await?;
        for t in &r.topics {
            for p in &t.partitions {
                if matches!(
                    p.error_code,
                    REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION | UNKNOWN_MEMBER_ID
                ) {
                    return Ok(true);
                }
                if p.error_code != 0 {
                    return Err(ClientError::Protocol(format!(
                        "OffsetCommit of partition {}: error {}",
                        p.partition_index, p.error_code
                    )));
                }
            }
        }
        Ok(false)
    }

    /// Leaves the group (best effort).
    pub async fn leave(&mut self) {
        let id = self.id();
        let req = LeaveGroupRequest::default()
            .with_group_id(self.group.clone())
            .with_members(vec![MemberIdentity::default()
                .with_member_id(StrBytes::from_string(self.member_id.clone()))]);
        let _: Result<LeaveGroupResponse, _> = call(
            &mut self.stream,
            &self.addr,
            ApiKey::LeaveGroup,
            LEAVE_VERSION,
            id,
            &req,
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_assignment_and_codecs() {
        let members = vec!["b".to_string(), "a".to_string(), "c".to_string()];
        let a = range_assign(&members, 8);
        assert_eq!(
            a,
            vec![
                ("a".to_string(), vec![0, 1, 2]),
                ("b".to_string(), vec![3, 4, 5]),
                ("c".to_string(), vec![6, 7]),
            ]
        );
        let all: Vec<i32> = range_assign(&members, 2)
            .into_iter()
            .flat_map(|(_, p)| p)
            .collect();
        assert_eq!(all, vec![0, 1]);
        assert_eq!(
            assigned_partitions(&assignment("orders", &[3, 4, 5])),
            vec![3, 4, 5]
        );
        assert!(assigned_partitions(&[0, 1]).is_empty());
        let s = subscription(&["orders"]);
        assert_eq!(&s[..2], &[0, 0]);
        assert_eq!(&s[8..14], b"orders");
    }
}

//! JoinGroup: forwarded to the group's coordinator shard; answered when
//! the rebalance completes (or at once with MEMBER_ID_REQUIRED and a new
//! member id, or an error).

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse, ResponseKind};
use kafka_protocol::ResponseError;
use sluice_tuning::limits;

use super::{answer_from, Ctx, Reply};
use crate::groups::group::{JoinRequest, JoinResult};
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: Ctx,
    req: JoinGroupRequest,
    client_id: String,
    peer: String,
) -> Reply {
    let group = req.group_id.0.to_string();
    let session = req.session_timeout_ms;
    let answer = move |r: JoinResult| {
        ctx.answer(ResponseKind::JoinGroup(
            JoinGroupResponse::default()
                .with_error_code(r.error)
                .with_generation_id(r.generation)
                .with_protocol_type(r.protocol_type)
                .with_protocol_name(if ctx.version >= 7 {
                    r.protocol_name
                } else {
                    Some(r.protocol_name.unwrap_or_default())
                })
                .with_leader(r.leader)
                .with_member_id(r.member_id)
                .with_members(
                    r.members
                        .into_iter()
                        .map(|(id, instance, metadata)| {
                            JoinGroupResponseMember::default()
                                .with_member_id(id)
                                .with_group_instance_id(instance)
                                .with_metadata(metadata)
                        })
                        .collect(),
                ),
        ))
    };
    if group.is_empty() || group.len() > limits::GROUP_NAME_BYTES_MAX {
        return Reply::Now(answer(JoinResult::error(ResponseError::InvalidGroupId, "")));
    }
    // Everything the group keeps of a member is bounded.
    let too_long = |s: &str| s.len() > limits::GROUP_NAME_BYTES_MAX;
    let metadata_bytes: usize = req.protocols.iter().map(|p| p.metadata.len()).sum();
    if client_id.len() > limits::CLIENT_ID_BYTES_MAX
        || req.group_instance_id.as_deref().is_some_and(too_long)
        || too_long(&req.protocol_type)
        || req.protocols.iter().any(|p| too_long(&p.name))
        || req.protocols.len() > limits::GROUP_PROTOCOLS_MAX
        || metadata_bytes > limits::GROUP_MEMBER_METADATA_BYTES_MAX
    {
        return Reply::Now(answer(JoinResult::error(
            ResponseError::InvalidRequest,
            &req.member_id,
        )));
    }
    if !(limits::GROUP_SESSION_TIMEOUT_MS_MIN..=limits::GROUP_SESSION_TIMEOUT_MS_MAX)
        .contains(&session)
    {
        return Reply::Now(answer(JoinResult::error(
            ResponseError::InvalidSessionTimeout,
            &req.member_id,
        )));
    }
    let rebalance = if ctx.version >= 1 {
        req.rebalance_timeout_ms
    } else {
        session
    };
    let join = JoinRequest {
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.map(|i| i.to_string()),
        client_id,
        client_host: peer,
        session_timeout: Duration::from_millis(session as u64),
        rebalance_timeout: Duration::from_millis(rebalance.max(0) as u64),
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .into_iter()
            // Copied: a slice would keep the whole receive buffer alive
            // for as long as the group remembers the member.
            .map(|p| (p.name.to_string(), Bytes::copy_from_slice(&p.metadata)))
            .collect(),
        require_known_member_id: ctx.version >= 4,
    };
    let owner = shard.group_owner(&group);
    let rx = shard
        .call_coordinator(owner, move |c| async move { c.join(&group, join) })
        .await;
    Reply::Later(Box::pin(async move {
        let r = answer_from(rx, || {
            JoinResult::error(ResponseError::CoordinatorNotAvailable, "")
        })
        .await;
        // The leader's answer goes out first: the followers' assignments
        // wait for its SyncGroup. Writers of members that joined just
        // before the round completed may already be queued ahead of the
        // leader's; a follower steps back behind it once.
        if r.error == 0 && r.leader != r.member_id {
            futures_lite::future::yield_now().await;
        }
        answer(r)
    }))
}

//! Heartbeat: keeps a member alive; tells it when a rebalance started.

use std::rc::Rc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse, ResponseKind};
use kafka_protocol::ResponseError;
use sluice_net::response::ResponseChunks;

use super::Ctx;
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, ctx: Ctx, req: HeartbeatRequest) -> ResponseChunks {
    let group = req.group_id.0.to_string();
    let member = req.member_id.to_string();
    let instance = req.group_instance_id.map(|i| i.to_string());
    let generation = req.generation_id;
    let owner = shard.group_owner(&group);
    let code = shard
        .call_coordinator(owner, move |c| async move {
            c.heartbeat(&group, &member, instance.as_deref(), generation)
        })
        .await
        .unwrap_or(ResponseError::CoordinatorNotAvailable.code());
    ctx.answer(ResponseKind::Heartbeat(
        HeartbeatResponse::default().with_error_code(code),
    ))
}

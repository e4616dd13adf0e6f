//! DeleteGroups: groups without members lose their committed offsets.

use crate::security::acl::Operation;
use crate::security::Authz;
use std::rc::Rc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse, ResponseKind};
use kafka_protocol::ResponseError;
use sluice_net::response::ResponseChunks;

use super::{answer_from, Ctx};
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: Ctx,
    req: DeleteGroupsRequest,
    authz: &Authz<'_>,
) -> ResponseChunks {
    let mut results = Vec::new();
    for id in req.groups_names {
        let group = id.0.to_string();
        if !authz.group(Operation::Delete, &group) {
            results.push(
                DeletableGroupResult::default()
                    .with_group_id(id)
                    .with_error_code(ResponseError::GroupAuthorizationFailed.code()),
            );
            continue;
        }
        let owner = shard.group_owner(&group);
        let rx = shard
            .call_coordinator(owner, move |c| async move { c.delete_group(&group) })
            .await;
        let code = answer_from(rx, || ResponseError::CoordinatorNotAvailable.code()).await;
        results.push(
            DeletableGroupResult::default()
                .with_group_id(id)
                .with_error_code(code),
        );
    }
    ctx.answer(ResponseKind::DeleteGroups(
        DeleteGroupsResponse::default().with_results(results),
    ))
}

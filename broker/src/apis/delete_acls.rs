//! DeleteAcls: removes the ACLs each filter matches (ALTER on the
//! cluster) and answers them.

use std::rc::Rc;

use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::{DeleteAclsRequest, DeleteAclsResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_net::response::ResponseChunks;

use super::Ctx;
use crate::security::acl::{Filter, Operation};
use crate::security::Authz;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: Ctx,
    req: DeleteAclsRequest,
    authz: &Authz<'_>,
) -> ResponseChunks {
    let allowed = authz.cluster(Operation::Alter);
    let mut results = Vec::with_capacity(req.filters.len());
    for f in req.filters {
        let filter = Filter {
            resource_type: f.resource_type_filter,
            name: f.resource_name_filter.map(|s| s.to_string()),
            pattern: f.pattern_type_filter,
            principal: f.principal_filter.map(|s| s.to_string()),
            host: f.host_filter.map(|s| s.to_string()),
            operation: f.operation,
            permission: f.permission_type,
        };
        let outcome = if !allowed {
            Err((
                ResponseError::ClusterAuthorizationFailed,
                "ALTER on the cluster is not allowed".to_string(),
            ))
        } else if let Err(why) = filter.check() {
            Err((ResponseError::InvalidRequest, why))
        } else {
            crate::security::update(shard, move |s| Ok(s.remove_acls(&filter)))
                .await
                .map_err(|e| (ResponseError::KafkaStorageError, e))
        };
        results.push(match outcome {
            Ok(gone) => DeleteAclsFilterResult::default().with_matching_acls(
                gone.into_iter()
                    .map(|a| {
                        DeleteAclsMatchingAcl::default()
                            .with_resource_type(a.resource_type.code())
                            .with_resource_name(StrBytes::from_string(a.name))
                            .with_pattern_type(a.pattern.code())
                            .with_principal(StrBytes::from_string(a.principal))
                            .with_host(StrBytes::from_string(a.host))
                            .with_operation(a.operation.code())
                            .with_permission_type(a.permission.code())
                    })
                    .collect(),
            ),
            Err((code, why)) => DeleteAclsFilterResult::default()
                .with_error_code(code.code())
                .with_error_message(Some(StrBytes::from_string(why))),
        });
    }
    ctx.answer(ResponseKind::DeleteAcls(
        DeleteAclsResponse::default().with_filter_results(results),
    ))
}

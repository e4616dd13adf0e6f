//! CreateAcls: adds ACLs (ALTER on the cluster). Each creation is
//! answered on its own; an ACL already there is not added twice.

use std::rc::Rc;

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::{CreateAclsRequest, CreateAclsResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_net::response::ResponseChunks;

use super::Ctx;
use crate::security::acl::{Acl, Operation, PatternType, Permission, ResourceType};
use crate::security::Authz;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: Ctx,
    req: CreateAclsRequest,
    authz: &Authz<'_>,
) -> ResponseChunks {
    let allowed = authz.cluster(Operation::Alter);
    let mut results = Vec::with_capacity(req.creations.len());
    for c in req.creations {
        let outcome = if !allowed {
            Err((
                ResponseError::ClusterAuthorizationFailed,
                "ALTER on the cluster is not allowed".to_string(),
            ))
        } else {
            match acl(&c) {
                Err(why) => Err((ResponseError::InvalidRequest, why)),
                Ok(a) => crate::security::update(shard, move |s| s.add_acl(a.clone()))
                    .await
                    .map_err(|e| (ResponseError::InvalidRequest, e)),
            }
        };
        results.push(match outcome {
            Ok(()) => AclCreationResult::default(),
            Err((code, why)) => AclCreationResult::default()
                .with_error_code(code.code())
                .with_error_message(Some(StrBytes::from_string(why))),
        });
    }
    ctx.answer(ResponseKind::CreateAcls(
        CreateAclsResponse::default().with_results(results),
    ))
}

fn acl(c: &kafka_protocol::messages::create_acls_request::AclCreation) -> Result<Acl, String> {
    let a = Acl {
        resource_type: ResourceType::from_code(c.resource_type)
            .ok_or_else(|| format!("resource type {} cannot have ACLs", c.resource_type))?,
        name: c.resource_name.to_string(),
        pattern: PatternType::from_code(c.resource_pattern_type).ok_or_else(|| {
            format!(
                "pattern type {} is not LITERAL or PREFIXED",
                c.resource_pattern_type
            )
        })?,
        principal: c.principal.to_string(),
        host: c.host.to_string(),
        operation: Operation::from_code(c.operation)
            .ok_or_else(|| format!("operation {} is not one an ACL can name", c.operation))?,
        permission: Permission::from_code(c.permission_type)
            .ok_or_else(|| format!("permission type {} is not ALLOW or DENY", c.permission_type))?,
    };
    a.check()?;
    Ok(a)
}

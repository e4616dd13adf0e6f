//! DescribeAcls: the ACLs a filter matches, grouped by resource pattern
//! (DESCRIBE on the cluster, checked before the handler).

use std::rc::Rc;

use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{DescribeAclsRequest, DescribeAclsResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_net::response::ResponseChunks;

use super::Ctx;
use crate::security::acl::Filter;
use crate::shard::Shard;

pub fn handle(shard: &Rc<Shard>, ctx: Ctx, req: DescribeAclsRequest) -> ResponseChunks {
    let filter = Filter {
        resource_type: req.resource_type_filter,
        name: req.resource_name_filter.map(|s| s.to_string()),
        pattern: req.pattern_type_filter,
        principal: req.principal_filter.map(|s| s.to_string()),
        host: req.host_filter.map(|s| s.to_string()),
        operation: req.operation,
        permission: req.permission_type,
    };
    let out = DescribeAclsResponse::default();
    if let Err(why) = filter.check() {
        return ctx.answer(ResponseKind::DescribeAcls(
            out.with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(Some(StrBytes::from_string(why))),
        ));
    }
    let security = shard.security();
    let mut matched: Vec<_> = security.acls.iter().filter(|a| filter.matches(a)).collect();
    matched.sort();
    let mut resources: Vec<DescribeAclsResource> = Vec::new();
    for a in matched {
        let d = AclDescription::default()
            .with_principal(StrBytes::from_string(a.principal.clone()))
            .with_host(StrBytes::from_string(a.host.clone()))
            .with_operation(a.operation.code())
            .with_permission_type(a.permission.code());
        match resources.last_mut() {
            Some(r)
                if r.resource_type == a.resource_type.code()
                    && r.resource_name.as_str() == a.name
                    && r.pattern_type == a.pattern.code() =>
            {
                r.acls.push(d)
            }
            _ => resources.push(
                DescribeAclsResource::default()
                    .with_resource_type(a.resource_type.code())
                    .with_resource_name(StrBytes::from_string(a.name.clone()))
                    .with_pattern_type(a.pattern.code())
                    .with_acls(vec![d]),
            ),
        }
    }
    ctx.answer(ResponseKind::DescribeAcls(out.with_resources(resources)))
}

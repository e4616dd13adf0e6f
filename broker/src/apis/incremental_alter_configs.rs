//! IncrementalAlterConfigs: set or delete topic configs; the controller
//! validates the result against the log's limits, stores it, and every
//! owner applies it to its partitions before the answer.

use crate::security::acl::Operation;
use crate::security::Authz;
use std::rc::Rc;

use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_net::response::ResponseChunks;

use super::describe_configs::RESOURCE_TOPIC;
use super::{on_controller_each, Ctx};
use crate::controller::ConfigOp;
use crate::metadata::Refusal;
use crate::shard::Shard;

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: Ctx,
    req: IncrementalAlterConfigsRequest,
    authz: &Authz<'_>,
) -> ResponseChunks {
    let resources: Vec<_> = req
        .resources
        .iter()
        .map(|r| (r.resource_type, r.resource_name.clone()))
        .collect();
    let items = req
        .resources
        .into_iter()
        .map(|r| {
            if r.resource_type != RESOURCE_TOPIC {
                return Err(Refusal::new(
                    ResponseError::InvalidRequest,
                    "only topic configs can be altered",
                ));
            }
            if !authz.topic(Operation::AlterConfigs, &r.resource_name) {
                return Err(Refusal::new(
                    ResponseError::TopicAuthorizationFailed,
                    "ALTER_CONFIGS on the topic is not allowed",
                ));
            }
            let ops = r
                .configs
                .into_iter()
                .map(|c| match (c.config_operation, c.value) {
                    (OP_SET, Some(v)) => Ok(ConfigOp::Set(c.name.to_string(), v.to_string())),
                    (OP_DELETE, _) => Ok(ConfigOp::Delete(c.name.to_string())),
                    (op, _) => Err(Refusal::new(
                        ResponseError::InvalidRequest,
                        format!(
                            "config operation {op} on {:?} is not supported (use SET or DELETE)",
                            c.name.as_str()
                        ),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((r.resource_name.to_string(), ops))
        })
        .collect();
    let validate_only = req.validate_only;
    let results = on_controller_each(shard, items, move |s, changes| async move {
        s.controller()
            .alter_configs(&s, changes, validate_only)
            .await
    })
    .await;
    ctx.answer(ResponseKind::IncrementalAlterConfigs(
        IncrementalAlterConfigsResponse::default().with_responses(
            resource_outcomes(resources, results)
                .map(|(kind, name, code, message)| {
                    AlterConfigsResourceResponse::default()
                        .with_resource_type(kind)
                        .with_resource_name(name)
                        .with_error_code(code)
                        .with_error_message(message)
                })
                .collect(),
        ),
    ))
}

/// (resource type, name, error code, message) per config resource:
/// AlterConfigs and IncrementalAlterConfigs answer in the same shape, with
/// types of their own.
pub fn resource_outcomes(
    resources: Vec<(i8, StrBytes)>,
    results: Vec<Result<(), Refusal>>,
) -> impl Iterator<Item = (i8, StrBytes, i16, Option<StrBytes>)> {
    resources
        .into_iter()
        .zip(results)
        .map(|((kind, name), r)| match r {
            Ok(()) => (kind, name, 0, None),
            Err(e) => (kind, name, e.code, Some(StrBytes::from_string(e.message))),
        })
}

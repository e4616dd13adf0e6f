//! AlterConfigs (the older, non-incremental API that some admin clients
//! still use): replaces a topic's whole set of configs with the one given.

use crate::security::acl::Operation;
use crate::security::Authz;
use std::rc::Rc;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse, ResponseKind};
use kafka_protocol::ResponseError;
use sluice_net::response::ResponseChunks;

use super::describe_configs::RESOURCE_TOPIC;
use super::incremental_alter_configs::resource_outcomes;
use super::{on_controller_each, Ctx};
use crate::controller::ConfigOp;
use crate::metadata::Refusal;
use crate::shard::Shard;

/// ALTER_CONFIGS on each topic.
pub async fn handle(
    shard: &Rc<Shard>,
    ctx: Ctx,
    req: AlterConfigsRequest,
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
            let mut ops = vec![ConfigOp::Clear];
            ops.extend(
                r.configs
                    .into_iter()
                    .filter_map(|c| Some(ConfigOp::Set(c.name.to_string(), c.value?.to_string()))),
            );
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
    ctx.answer(ResponseKind::AlterConfigs(
        AlterConfigsResponse::default().with_responses(
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

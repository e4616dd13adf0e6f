//! DescribeConfigs: a topic's configs the log honours, each marked as set
//! on the topic or as the default. Broker resources answer with no configs.

use crate::security::acl::Operation;
use crate::security::Authz;
use std::rc::Rc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_net::response::ResponseChunks;

use super::Ctx;
use crate::metadata::config_defaults;
use crate::shard::Shard;

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_LIST: i8 = 7;

fn config_type(name: &str) -> i8 {
    match name {
        "cleanup.policy" => TYPE_LIST,
        "max.message.bytes" | "segment.bytes" => TYPE_INT,
        "message.timestamp.type" => TYPE_STRING,
        _ => TYPE_LONG,
    }
}

/// DESCRIBE_CONFIGS on each topic, or on the cluster for a broker.
pub fn handle(
    shard: &Rc<Shard>,
    ctx: Ctx,
    req: DescribeConfigsRequest,
    authz: &Authz<'_>,
) -> ResponseChunks {
    let meta = shard.meta();
    let results = req
        .resources
        .into_iter()
        .map(|r| {
            let out = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            match r.resource_type {
                RESOURCE_BROKER if !authz.cluster(Operation::DescribeConfigs) => out
                    .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "DESCRIBE_CONFIGS on the cluster is not allowed",
                    ))),
                RESOURCE_TOPIC if !authz.topic(Operation::DescribeConfigs, &r.resource_name) => out
                    .with_error_code(ResponseError::TopicAuthorizationFailed.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "DESCRIBE_CONFIGS on the topic is not allowed",
                    ))),
                RESOURCE_BROKER => out,
                RESOURCE_TOPIC => {
                    let Some(t) = meta.topic(&r.resource_name) else {
                        return out
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_error_message(Some(StrBytes::from_string(format!(
                                "no topic {:?}",
                                r.resource_name.as_str()
                            ))));
                    };
                    // Null (or, as Kafka also reads it, empty) asks for all.
                    let keys: Option<Vec<String>> = r
                        .configuration_keys
                        .filter(|k| !k.is_empty())
                        .map(|k| k.iter().map(|k| k.to_string()).collect());
                    let configs = config_defaults()
                        .into_iter()
                        .filter(|(name, _)| {
                            keys.as_ref().is_none_or(|k| k.iter().any(|k| k == name))
                        })
                        .map(|(name, default)| {
                            let (value, source) = match t.configs.get(name) {
                                Some(v) => (v.clone(), SOURCE_TOPIC),
                                None => (default, SOURCE_DEFAULT),
                            };
                            DescribeConfigsResourceResult::default()
                                .with_name(StrBytes::from_static_str(name))
                                .with_value(Some(StrBytes::from_string(value)))
                                .with_config_source(source)
                                .with_config_type(config_type(name))
                        })
                        .collect();
                    out.with_configs(configs)
                }
                other => out
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(StrBytes::from_string(format!(
                        "resource type {other} is not described by this broker"
                    )))),
            }
        })
        .collect();
    ctx.answer(ResponseKind::DescribeConfigs(
        DescribeConfigsResponse::default().with_results(results),
    ))
}

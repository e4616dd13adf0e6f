//! DescribeUserScramCredentials: each user's SCRAM mechanisms and
//! iterations (never a salt or a key). DESCRIBE_CONFIGS on the cluster
//! (checked before the handler).

use std::rc::Rc;

use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_net::response::ResponseChunks;

use super::Ctx;
use crate::shard::Shard;

pub fn handle(
    shard: &Rc<Shard>,
    ctx: Ctx,
    req: DescribeUserScramCredentialsRequest,
) -> ResponseChunks {
    let out = DescribeUserScramCredentialsResponse::default();
    let security = shard.security();
    let names: Vec<String> = match req.users {
        Some(u) if !u.is_empty() => u.into_iter().map(|u| u.name.to_string()).collect(),
        _ => security.users.keys().cloned().collect(),
    };
    let results = names
        .iter()
        .map(|name| {
            let r = DescribeUserScramCredentialsResult::default()
                .with_user(StrBytes::from_string(name.clone()));
            if names.iter().filter(|n| *n == name).count() > 1 {
                return r
                    .with_error_code(ResponseError::DuplicateResource.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "the user is named twice",
                    )));
            }
            match security.users.get(name) {
                Some(creds) => r.with_credential_infos(
                    creds
                        .iter()
                        .map(|(m, c)| {
                            CredentialInfo::default()
                                .with_mechanism(m.code())
                                .with_iterations(c.iterations as i32)
                        })
                        .collect(),
                ),
                None => r
                    .with_error_code(ResponseError::ResourceNotFound.code())
                    .with_error_message(Some(StrBytes::from_string(format!(
                        "no credentials for user {name}"
                    )))),
            }
        })
        .collect();
    ctx.answer(ResponseKind::DescribeUserScramCredentials(
        out.with_results(results),
    ))
}

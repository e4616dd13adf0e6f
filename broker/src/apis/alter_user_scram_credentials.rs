//! AlterUserScramCredentials: sets and deletes users' SCRAM credentials.
//! The client salts and hashes the password (the request carries the
//! salted password, never the password); the broker keeps the keys
//! derived from it (`security::scram::Credential`).

use std::rc::Rc;

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_net::response::ResponseChunks;

use super::Ctx;
use crate::security::acl::Operation;
use crate::security::scram::{check_iterations, Credential, Mechanism};
use crate::security::Authz;
use crate::shard::Shard;

/// Why a user's changes are refused.
type Refused = (ResponseError, String);

/// One change the request asks for.
enum Change {
    Upsert(Mechanism, Credential),
    Delete(Mechanism),
}

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: Ctx,
    req: AlterUserScramCredentialsRequest,
    authz: &Authz<'_>,
) -> ResponseChunks {
    // (user, its changes, or why the user's changes are refused)
    let mut users: Vec<(String, Result<Vec<Change>, Refused>)> = Vec::new();
    let mut add = |user: String, change: Result<Change, Refused>| {
        let i = match users.iter().position(|(u, _)| *u == user) {
            Some(i) => i,
            None => {
                users.push((user, Ok(Vec::new())));
                users.len() - 1
            }
        };
        let slot = &mut users[i].1;
        match (slot.as_mut(), change) {
            (Ok(v), Ok(c)) => {
                let m = match &c {
                    Change::Upsert(m, _) | Change::Delete(m) => *m,
                };
                if v.iter()
                    .any(|d| matches!(d, Change::Upsert(x, _) | Change::Delete(x) if *x == m))
                {
                    *slot = Err((
                        ResponseError::DuplicateResource,
                        format!("{m} is named twice for the user"),
                    ));
                } else {
                    v.push(c);
                }
            }
            (Ok(_), Err(e)) => *slot = Err(e),
            (Err(_), _) => {}
        }
    };
    let mech = |code: i8| {
        Mechanism::from_code(code).ok_or((
            ResponseError::UnsupportedSaslMechanism,
            format!("unknown SCRAM mechanism {code}"),
        ))
    };
    for d in req.deletions {
        add(d.name.to_string(), mech(d.mechanism).map(Change::Delete));
    }
    for u in req.upsertions {
        let change = mech(u.mechanism).and_then(|m| {
            let iterations = check_iterations(u.iterations)
                .map_err(|e| (ResponseError::UnacceptableCredential, e))?;
            if u.salt.is_empty() || u.salted_password.is_empty() {
                return Err((
                    ResponseError::UnacceptableCredential,
                    "the salt and the salted password cannot be empty".into(),
                ));
            }
            let cred = Credential::from_salted(m, u.salt.to_vec(), iterations, &u.salted_password);
            Ok(Change::Upsert(m, cred))
        });
        add(u.name.to_string(), change);
    }
    let allowed = authz.cluster(Operation::AlterConfigs);
    let mut results = Vec::with_capacity(users.len());
    for (user, changes) in users {
        let outcome = match changes {
            _ if !allowed => Err((
                ResponseError::ClusterAuthorizationFailed,
                "ALTER_CONFIGS on the cluster is not allowed".to_string(),
            )),
            Err(e) => Err(e),
            Ok(changes) => {
                let name = user.clone();
                crate::security::update(shard, move |s| {
                    for c in &changes {
                        match c {
                            Change::Upsert(m, cred) => s.upsert(&name, *m, cred.clone())?,
                            Change::Delete(m) => {
                                if !s.remove(&name, *m) {
                                    return Err(format!("not found: {name} has no {m} credential"));
                                }
                            }
                        }
                    }
                    Ok(())
                })
                .await
                .map_err(|e| {
                    let code = if e.starts_with("not found") {
                        ResponseError::ResourceNotFound
                    } else if e.contains("user name") {
                        ResponseError::UnacceptableCredential
                    } else {
                        ResponseError::KafkaStorageError
                    };
                    (code, e)
                })
            }
        };
        let r = AlterUserScramCredentialsResult::default().with_user(StrBytes::from_string(user));
        results.push(match outcome {
            Ok(()) => r,
            Err((code, why)) => r
                .with_error_code(code.code())
                .with_error_message(Some(StrBytes::from_string(why))),
        });
    }
    ctx.answer(ResponseKind::AlterUserScramCredentials(
        AlterUserScramCredentialsResponse::default().with_results(results),
    ))
}

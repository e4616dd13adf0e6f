//! `sluice user`: SCRAM users. With `--data-dir` the credentials file of
//! a stopped broker is changed directly (the first administrator, before
//! the broker has a user to authenticate one with); otherwise the
//! running broker is asked (AlterUserScramCredentials,
//! DescribeUserScramCredentials). Passwords are salted and hashed here;
//! neither the file nor the request holds one.

use std::path::{Path, PathBuf};

use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, ApiKey,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;

use super::{connect, table, CliError, Common, Result};
use crate::security::scram::{self, Credential, Mechanism};
use crate::security::store;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum UserCommand {
    /// Create a user, or set its password for the mechanism.
    Create {
        name: String,
        /// The password (or --password-stdin).
        #[arg(long, required_unless_present = "password_stdin")]
        password: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        #[arg(long, default_value = "SCRAM-SHA-256", value_parser = parse_mechanism)]
        mechanism: Mechanism,
        #[arg(long, default_value_t = scram::ITERATIONS_DEFAULT)]
        iterations: u32,
        #[command(flatten)]
        target: Target,
    },
    /// Users and their mechanisms.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Delete a user's credential for one mechanism, or all of them.
    Delete {
        name: String,
        /// Only this mechanism's credential.
        #[arg(long, value_parser = parse_mechanism)]
        mechanism: Option<Mechanism>,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// Change the data directory of a stopped broker instead of asking
    /// a running one.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// Users and each one's mechanisms with their iterations.
type Users = Vec<(String, Vec<(Mechanism, u32)>)>;

fn parse_mechanism(s: &str) -> std::result::Result<Mechanism, String> {
    Mechanism::parse(s).ok_or_else(|| format!("{s:?}: SCRAM-SHA-256 or SCRAM-SHA-512"))
}

pub fn run(cmd: UserCommand, common: &Common) -> Result<String> {
    match cmd {
        UserCommand::Create {
            name,
            password,
            password_stdin,
            mechanism,
            iterations,
            target,
        } => {
            let password = match password {
                Some(p) => p,
                None if password_stdin => {
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .map_err(|e| CliError::Usage(format!("reading the password: {e}")))?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
                None => return Err(CliError::Usage("--password or --password-stdin".into())),
            };
            if password.is_empty() {
                return Err(CliError::Usage("the password cannot be empty".into()));
            }
            scram::check_iterations(iterations as i32).map_err(CliError::Usage)?;
            store::check_user_name(&name).map_err(CliError::Usage)?;
            match target.data_dir {
                Some(dir) => offline(&dir, |s| {
                    s.upsert(
                        &name,
                        mechanism,
                        Credential::new(mechanism, &password, iterations),
                    )
                })?,
                None => {
                    let salt = scram::random_bytes(24);
                    let salted = mechanism.salted_password(&password, &salt, iterations);
                    alter(
                        common,
                        AlterUserScramCredentialsRequest::default().with_upsertions(vec![
                            ScramCredentialUpsertion::default()
                                .with_name(StrBytes::from_string(name.clone()))
                                .with_mechanism(mechanism.code())
                                .with_iterations(iterations as i32)
                                .with_salt(salt.into())
                                .with_salted_password(salted.into()),
                        ]),
                    )?
                }
            }
            Ok(if common.json {
                json!({"created": name, "mechanism": mechanism.name()}).to_string() + "\n"
            } else {
                format!("user {name}: {mechanism} credential set\n")
            })
        }
        UserCommand::List { target } => {
            let users: Users = match target.data_dir {
                Some(dir) => store::load(&dir)
                    .map_err(|e| CliError::Refused(e.to_string()))?
                    .users
                    .into_iter()
                    .map(|(u, c)| (u, c.into_iter().map(|(m, c)| (m, c.iterations)).collect()))
                    .collect(),
                None => describe(common)?,
            };
            Ok(if common.json {
                let v: Vec<_> = users
                    .iter()
                    .map(|(u, c)| {
                        let c: Vec<_> = c
                            .iter()
                            .map(|(m, i)| json!({"mechanism": m.name(), "iterations": i}))
                            .collect();
                        json!({"user": u, "credentials": c})
                    })
                    .collect();
                serde_json::to_string(&v).unwrap() + "\n"
            } else {
                let rows: Vec<Vec<String>> = users
                    .into_iter()
                    .flat_map(|(u, c)| {
                        c.into_iter()
                            .map(move |(m, i)| vec![u.clone(), m.name().to_string(), i.to_string()])
                    })
                    .collect();
                table(&["USER", "MECHANISM", "ITERATIONS"], &rows)
            })
        }
        UserCommand::Delete {
            name,
            mechanism,
            target,
        } => {
            let mechanisms: Vec<Mechanism> = match (mechanism, &target.data_dir) {
                (Some(m), _) => vec![m],
                (None, Some(dir)) => store::load(dir)
                    .map_err(|e| CliError::Refused(e.to_string()))?
                    .users
                    .get(&name)
                    .map(|c| c.keys().copied().collect())
                    .unwrap_or_default(),
                (None, None) => describe(common)?
                    .into_iter()
                    .find(|(u, _)| *u == name)
                    .map(|(_, c)| c.into_iter().map(|(m, _)| m).collect())
                    .unwrap_or_default(),
            };
            if mechanisms.is_empty() {
                return Err(CliError::Refused(format!("no user {name}")));
            }
            match target.data_dir {
                Some(dir) => offline(&dir, |s| {
                    for m in &mechanisms {
                        if !s.remove(&name, *m) {
                            return Err(format!("user {name} has no {m} credential"));
                        }
                    }
                    Ok(())
                })?,
                None => alter(
                    common,
                    AlterUserScramCredentialsRequest::default().with_deletions(
                        mechanisms
                            .iter()
                            .map(|m| {
                                ScramCredentialDeletion::default()
                                    .with_name(StrBytes::from_string(name.clone()))
                                    .with_mechanism(m.code())
                            })
                            .collect(),
                    ),
                )?,
            }
            Ok(if common.json {
                json!({"deleted": name}).to_string() + "\n"
            } else {
                format!("user {name}: deleted\n")
            })
        }
    }
}

/// Changes the credentials file of a stopped broker.
fn offline(
    dir: &Path,
    f: impl FnOnce(&mut store::Security) -> std::result::Result<(), String>,
) -> Result<()> {
    if !dir.is_dir() {
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError::Refused(format!("{}: {e}", dir.display())))?;
    }
    let _lock = store::lock_data_dir(dir).map_err(|e| CliError::Refused(e.to_string()))?;
    let mut s = store::load(dir).map_err(|e| CliError::Refused(e.to_string()))?;
    f(&mut s).map_err(CliError::Refused)?;
    store::store(dir, &s).map_err(|e| CliError::Refused(e.to_string()))
}

fn alter(common: &Common, req: AlterUserScramCredentialsRequest) -> Result<()> {
    let mut c = connect(common)?;
    let (_, r): (i16, AlterUserScramCredentialsResponse) =
        c.call(ApiKey::AlterUserScramCredentials, (0, 0), |_| req)?;
    for u in r.results {
        if u.error_code != 0 {
            return Err(CliError::Refused(format!(
                "user {}: {}",
                u.user.as_str(),
                u.error_message.as_deref().unwrap_or("refused")
            )));
        }
    }
    Ok(())
}

fn describe(common: &Common) -> Result<Users> {
    let mut c = connect(common)?;
    let (_, r): (i16, DescribeUserScramCredentialsResponse) =
        c.call(ApiKey::DescribeUserScramCredentials, (0, 0), |_| {
            DescribeUserScramCredentialsRequest::default().with_users(None::<Vec<UserName>>)
        })?;
    if r.error_code != 0 {
        return Err(CliError::Refused(
            r.error_message
                .as_deref()
                .unwrap_or("describing users was refused")
                .to_string(),
        ));
    }
    Ok(r.results
        .into_iter()
        .filter(|u| u.error_code == 0)
        .map(|u| {
            (
                u.user.to_string(),
                u.credential_infos
                    .iter()
                    .filter_map(|c| Some((Mechanism::from_code(c.mechanism)?, c.iterations as u32)))
                    .collect(),
            )
        })
        .collect())
}

//! `sluice acl`: create, list and delete ACLs on a running broker
//! (CreateAcls, DescribeAcls, DeleteAcls).

use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{
    ApiKey, CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;

use super::{connect, table, CliError, Common, Result};
use crate::security::acl::{self, Operation, PatternType, Permission, ResourceType};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum AclCommand {
    /// Allow (or with --deny, deny) a principal operations on a resource.
    Create {
        /// `User:NAME`, a bare NAME, or `User:*` for everyone.
        #[arg(long)]
        principal: String,
        /// READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, CLUSTER_ACTION,
        /// DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE or ALL;
        /// repeat for several.
        #[arg(long = "operation", required = true, value_parser = parse_operation)]
        operations: Vec<Operation>,
        /// The client's address the ACL is for; default every host.
        #[arg(long, default_value = "*")]
        host: String,
        /// A DENY ACL instead of ALLOW.
        #[arg(long)]
        deny: bool,
        #[command(flatten)]
        resource: Resource,
    },
    /// ACLs, all or those matching the options given.
    List {
        #[arg(long)]
        principal: Option<String>,
        #[command(flatten)]
        resource: Resource,
    },
    /// Delete the ACLs matching the options given (at least a resource or
    /// a principal).
    Delete {
        #[arg(long)]
        principal: Option<String>,
        #[arg(long, value_parser = parse_operation)]
        operation: Option<Operation>,
        #[command(flatten)]
        resource: Resource,
    },
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct Resource {
    #[arg(long, group = "resource")]
    pub topic: Option<String>,
    #[arg(long, group = "resource")]
    pub group: Option<String>,
    #[arg(long, group = "resource")]
    pub transactional_id: Option<String>,
    /// The cluster itself.
    #[arg(long, group = "resource")]
    pub cluster: bool,
    /// The name is a prefix (every resource whose name starts with it).
    #[arg(long)]
    pub prefixed: bool,
}

impl Resource {
    fn named(&self) -> Option<(ResourceType, String)> {
        if let Some(t) = &self.topic {
            Some((ResourceType::Topic, t.clone()))
        } else if let Some(g) = &self.group {
            Some((ResourceType::Group, g.clone()))
        } else if let Some(x) = &self.transactional_id {
            Some((ResourceType::TransactionalId, x.clone()))
        } else if self.cluster {
            Some((ResourceType::Cluster, acl::CLUSTER_NAME.to_string()))
        } else {
            None
        }
    }

    fn pattern(&self) -> PatternType {
        if self.prefixed {
            PatternType::Prefixed
        } else {
            PatternType::Literal
        }
    }
}

fn parse_operation(s: &str) -> std::result::Result<Operation, String> {
    Operation::parse(s).ok_or_else(|| format!("{s:?} is not an ACL operation"))
}

fn principal(p: &str) -> String {
    if p.contains(':') {
        p.to_string()
    } else {
        format!("User:{p}")
    }
}

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

pub fn run(cmd: AclCommand, common: &Common) -> Result<String> {
    let mut c = connect(common)?;
    match cmd {
        AclCommand::Create {
            principal: who,
            operations,
            host,
            deny,
            resource,
        } => {
            let (rt, name) = resource.named().ok_or_else(|| {
                CliError::Usage("name a --topic, --group, --transactional-id or --cluster".into())
            })?;
            let permission = if deny {
                Permission::Deny
            } else {
                Permission::Allow
            };
            let who = principal(&who);
            let creations = operations
                .iter()
                .map(|op| {
                    AclCreation::default()
                        .with_resource_type(rt.code())
                        .with_resource_name(s(name.clone()))
                        .with_resource_pattern_type(resource.pattern().code())
                        .with_principal(s(who.clone()))
                        .with_host(s(host.clone()))
                        .with_operation(op.code())
                        .with_permission_type(permission.code())
                })
                .collect();
            let (_, r): (i16, CreateAclsResponse) = c.call(ApiKey::CreateAcls, (1, 3), |_| {
                CreateAclsRequest::default().with_creations(creations)
            })?;
            for x in &r.results {
                if x.error_code != 0 {
                    return Err(CliError::Refused(format!(
                        "create ACL: {}",
                        x.error_message.as_deref().unwrap_or("refused")
                    )));
                }
            }
            Ok(if common.json {
                json!({"created": r.results.len()}).to_string() + "\n"
            } else {
                format!("created {} ACL(s)\n", r.results.len())
            })
        }
        AclCommand::List {
            principal: who,
            resource,
        } => {
            let (rt, name) = match resource.named() {
                Some((rt, n)) => (rt.code(), Some(n)),
                None => (acl::ANY, None),
            };
            let pattern = if name.is_some() {
                resource.pattern().code()
            } else {
                acl::ANY
            };
            let (_, r): (i16, DescribeAclsResponse) =
                c.call(ApiKey::DescribeAcls, (1, 3), |_| {
                    DescribeAclsRequest::default()
                        .with_resource_type_filter(rt)
                        .with_resource_name_filter(name.map(s))
                        .with_pattern_type_filter(pattern)
                        .with_principal_filter(who.as_deref().map(principal).map(s))
                        .with_host_filter(None)
                        .with_operation(acl::ANY)
                        .with_permission_type(acl::ANY)
                })?;
            if r.error_code != 0 {
                return Err(CliError::Refused(format!(
                    "list ACLs: {}",
                    r.error_message.as_deref().unwrap_or("refused")
                )));
            }
            let mut rows = Vec::new();
            for res in &r.resources {
                for a in &res.acls {
                    let name = |c: i8, f: fn(i8) -> Option<&'static str>| {
                        f(c).map(str::to_string).unwrap_or_else(|| c.to_string())
                    };
                    rows.push(vec![
                        name(res.resource_type, |c| {
                            ResourceType::from_code(c).map(|v| v.name())
                        }),
                        res.resource_name.to_string(),
                        name(res.pattern_type, |c| {
                            PatternType::from_code(c).map(|v| v.name())
                        }),
                        a.principal.to_string(),
                        a.host.to_string(),
                        name(a.operation, |c| Operation::from_code(c).map(|v| v.name())),
                        name(a.permission_type, |c| {
                            Permission::from_code(c).map(|v| v.name())
                        }),
                    ]);
                }
            }
            Ok(if common.json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|r| {
                        json!({"resource_type": r[0], "name": r[1], "pattern": r[2],
                               "principal": r[3], "host": r[4], "operation": r[5],
                               "permission": r[6]})
                    })
                    .collect();
                serde_json::to_string(&v).unwrap() + "\n"
            } else {
                table(
                    &[
                        "RESOURCE",
                        "NAME",
                        "PATTERN",
                        "PRINCIPAL",
                        "HOST",
                        "OPERATION",
                        "PERMISSION",
                    ],
                    &rows,
                )
            })
        }
        AclCommand::Delete {
            principal: who,
            operation,
            resource,
        } => {
            let named = resource.named();
            if named.is_none() && who.is_none() {
                return Err(CliError::Usage(
                    "name a resource or a --principal (deleting every ACL takes both out of \
                     the way on purpose: use acl list to see them)"
                        .into(),
                ));
            }
            let (rt, name, pattern) = match named {
                Some((rt, n)) => (rt.code(), Some(n), resource.pattern().code()),
                None => (acl::ANY, None, acl::ANY),
            };
            let (_, r): (i16, DeleteAclsResponse) = c.call(ApiKey::DeleteAcls, (1, 3), |_| {
                DeleteAclsRequest::default().with_filters(vec![DeleteAclsFilter::default()
                    .with_resource_type_filter(rt)
                    .with_resource_name_filter(name.map(s))
                    .with_pattern_type_filter(pattern)
                    .with_principal_filter(who.as_deref().map(principal).map(s))
                    .with_host_filter(None)
                    .with_operation(operation.map_or(acl::ANY, Operation::code))
                    .with_permission_type(acl::ANY)])
            })?;
            let f = r
                .filter_results
                .first()
                .ok_or_else(|| CliError::Refused("no answer".into()))?;
            if f.error_code != 0 {
                return Err(CliError::Refused(format!(
                    "delete ACLs: {}",
                    f.error_message.as_deref().unwrap_or("refused")
                )));
            }
            Ok(if common.json {
                json!({"deleted": f.matching_acls.len()}).to_string() + "\n"
            } else {
                format!("deleted {} ACL(s)\n", f.matching_acls.len())
            })
        }
    }
}

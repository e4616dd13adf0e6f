//! ACLs as Kafka has them, and the authorizer. An ACL allows or denies a
//! principal (`User:NAME`, or `User:*` for every one) from a host (or
//! `*`) one operation on the resources a pattern names: a literal name
//! (`*` for every resource of the type) or a prefix. A request is allowed
//! when an ACL allows it and none denies it; a principal no ACL allows is
//! denied (Kafka's rule with an authorizer). Allowing READ, WRITE,
//! DELETE or ALTER allows DESCRIBE; allowing ALTER_CONFIGS allows
//! DESCRIBE_CONFIGS. The numbers are Kafka's wire codes.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ResourceType {
    Topic,
    Group,
    Cluster,
    TransactionalId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PatternType {
    Literal,
    Prefixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Permission {
    Deny,
    Allow,
}

/// Kafka's names and wire codes for each enum.
macro_rules! coded {
    ($t:ident { $($v:ident = $code:literal, $name:literal;)* }) => {
        impl $t {
            pub const ALL_VALUES: &'static [$t] = &[$($t::$v),*];
            pub fn code(self) -> i8 {
                match self { $($t::$v => $code),* }
            }
            pub fn from_code(c: i8) -> Option<$t> {
                match c { $($code => Some($t::$v),)* _ => None }
            }
            pub fn name(self) -> &'static str {
                match self { $($t::$v => $name),* }
            }
            /// By name, case-insensitive, `-` or `_` alike.
            pub fn parse(s: &str) -> Option<$t> {
                let s = s.replace('-', "_");
                $t::ALL_VALUES.iter().copied().find(|v| v.name().eq_ignore_ascii_case(&s))
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

coded!(ResourceType {
    Topic = 2, "TOPIC";
    Group = 3, "GROUP";
    Cluster = 4, "CLUSTER";
    TransactionalId = 5, "TRANSACTIONAL_ID";
});
coded!(PatternType {
    Literal = 3, "LITERAL";
    Prefixed = 4, "PREFIXED";
});
coded!(Operation {
    All = 2, "ALL";
    Read = 3, "READ";
    Write = 4, "WRITE";
    Create = 5, "CREATE";
    Delete = 6, "DELETE";
    Alter = 7, "ALTER";
    Describe = 8, "DESCRIBE";
    ClusterAction = 9, "CLUSTER_ACTION";
    DescribeConfigs = 10, "DESCRIBE_CONFIGS";
    AlterConfigs = 11, "ALTER_CONFIGS";
    IdempotentWrite = 12, "IDEMPOTENT_WRITE";
});
coded!(Permission {
    Deny = 2, "DENY";
    Allow = 3, "ALLOW";
});

/// The one name a cluster resource has.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// The wildcard of literal names, principals and hosts.
pub const WILDCARD: &str = "*";
/// The wire code of "any" in filters.
pub const ANY: i8 = 1;
/// The wire code of the MATCH pattern filter.
pub const MATCH: i8 = 2;

/// One ACL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Acl {
    pub resource_type: ResourceType,
    pub name: String,
    pub pattern: PatternType,
    pub principal: String,
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

impl Acl {
    /// Checks an ACL a client asks to create.
    pub fn check(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("the resource name cannot be empty".into());
        }
        if self.resource_type == ResourceType::Cluster && self.name != CLUSTER_NAME {
            return Err(format!("a cluster resource is named {CLUSTER_NAME}"));
        }
        if self.pattern == PatternType::Prefixed && self.name == WILDCARD {
            return Err("a prefixed pattern cannot be *".into());
        }
        match self.principal.split_once(':') {
            Some(("User", n)) if !n.is_empty() => {}
            _ => return Err(format!("principal {:?} is not User:NAME", self.principal)),
        }
        if self.host.is_empty() {
            return Err("the host cannot be empty (* for any)".into());
        }
        Ok(())
    }

    /// Whether this ACL's pattern covers the named resource.
    fn covers(&self, rt: ResourceType, name: &str) -> bool {
        self.resource_type == rt
            && match self.pattern {
                PatternType::Literal => self.name == name || self.name == WILDCARD,
                PatternType::Prefixed => name.starts_with(&self.name),
            }
    }

    fn applies_to(&self, principal: &str, host: &str) -> bool {
        (self.principal == principal || self.principal == "User:*")
            && (self.host == host || self.host == WILDCARD)
    }
}

/// Operations an ACL allowing `granted` also allows.
fn implies(granted: Operation, wanted: Operation) -> bool {
    use Operation::*;
    granted == wanted
        || granted == All
        || (wanted == Describe && matches!(granted, Read | Write | Delete | Alter))
        || (wanted == DescribeConfigs && granted == AlterConfigs)
}

/// Whether `principal` from `host` may do `op` on the resource.
pub fn authorize(
    acls: &[Acl],
    principal: &str,
    host: &str,
    op: Operation,
    rt: ResourceType,
    name: &str,
) -> bool {
    let mut allowed = false;
    for a in acls
        .iter()
        .filter(|a| a.covers(rt, name) && a.applies_to(principal, host))
    {
        match a.permission {
            Permission::Deny if a.operation == op || a.operation == Operation::All => return false,
            Permission::Allow if implies(a.operation, op) => allowed = true,
            _ => {}
        }
    }
    allowed
}

/// Whether `principal` may do `op` on some resource of the type (any
/// ALLOW ACL for the operation, whatever it names). Kafka's rule for an
/// idempotent producer: WRITE on any topic.
pub fn authorize_any(
    acls: &[Acl],
    principal: &str,
    host: &str,
    op: Operation,
    rt: ResourceType,
) -> bool {
    acls.iter().any(|a| {
        a.resource_type == rt
            && a.permission == Permission::Allow
            && a.applies_to(principal, host)
            && implies(a.operation, op)
            && !acls.iter().any(|d| {
                d.permission == Permission::Deny
                    && d.resource_type == rt
                    && d.applies_to(principal, host)
                    && (d.operation == op || d.operation == Operation::All)
                    && d.pattern == PatternType::Literal
                    && d.name == WILDCARD
            })
    })
}

/// A filter of DescribeAcls and DeleteAcls (wire codes; `ANY` matches
/// every value, `MATCH` every pattern that covers the name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub resource_type: i8,
    pub name: Option<String>,
    pub pattern: i8,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: i8,
    pub permission: i8,
}

impl Filter {
    /// Refuses codes no ACL has (UNKNOWN, 0, or out of range).
    pub fn check(&self) -> Result<(), String> {
        let ok = |c: i8, known: bool| c == ANY || known;
        if !ok(
            self.resource_type,
            ResourceType::from_code(self.resource_type).is_some(),
        ) {
            return Err(format!("unknown resource type {}", self.resource_type));
        }
        if !ok(
            self.pattern,
            self.pattern == MATCH || PatternType::from_code(self.pattern).is_some(),
        ) {
            return Err(format!("unknown pattern type {}", self.pattern));
        }
        if !ok(
            self.operation,
            Operation::from_code(self.operation).is_some(),
        ) {
            return Err(format!("unknown operation {}", self.operation));
        }
        if !ok(
            self.permission,
            Permission::from_code(self.permission).is_some(),
        ) {
            return Err(format!("unknown permission type {}", self.permission));
        }
        Ok(())
    }

    pub fn matches(&self, a: &Acl) -> bool {
        let code = |want: i8, have: i8| want == ANY || want == have;
        let text = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        let pattern = match self.pattern {
            ANY => text(&self.name, &a.name),
            MATCH => match &self.name {
                None => true,
                Some(n) => a.covers(a.resource_type, n),
            },
            p => p == a.pattern.code() && text(&self.name, &a.name),
        };
        code(self.resource_type, a.resource_type.code())
            && pattern
            && text(&self.principal, &a.principal)
            && text(&self.host, &a.host)
            && code(self.operation, a.operation.code())
            && code(self.permission, a.permission.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(
        rt: ResourceType,
        name: &str,
        pattern: PatternType,
        who: &str,
        op: Operation,
        p: Permission,
    ) -> Acl {
        Acl {
            resource_type: rt,
            name: name.into(),
            pattern,
            principal: who.into(),
            host: "*".into(),
            operation: op,
            permission: p,
        }
    }

    #[test]
    fn deny_wins_and_no_acl_denies() {
        use Operation::*;
        use PatternType::*;
        use Permission::*;
        use ResourceType::*;
        let acls = vec![
            acl(Topic, "orders", Literal, "User:alice", Write, Allow),
            acl(Topic, "logs-", Prefixed, "User:alice", Read, Allow),
            acl(Topic, "logs-secret", Literal, "User:alice", All, Deny),
            acl(Topic, "*", Literal, "User:bob", Read, Allow),
            acl(Group, "g", Literal, "User:*", Read, Allow),
            acl(
                Cluster,
                CLUSTER_NAME,
                Literal,
                "User:ops",
                AlterConfigs,
                Allow,
            ),
        ];
        let ok = |who, op, rt, name| authorize(&acls, who, "10.0.0.1", op, rt, name);
        assert!(ok("User:alice", Write, Topic, "orders"));
        assert!(
            !ok("User:alice", Read, Topic, "orders"),
            "WRITE is not READ"
        );
        assert!(
            ok("User:alice", Describe, Topic, "orders"),
            "WRITE implies DESCRIBE"
        );
        assert!(ok("User:alice", Read, Topic, "logs-app"));
        assert!(!ok("User:alice", Read, Topic, "logs-secret"), "a DENY wins");
        assert!(!ok("User:alice", Describe, Topic, "logs-secret"));
        assert!(
            !ok("User:alice", Read, Topic, "log"),
            "a prefix is not a match"
        );
        assert!(ok("User:bob", Read, Topic, "anything"));
        assert!(!ok("User:bob", Write, Topic, "anything"));
        assert!(ok("User:carol", Read, Group, "g"), "User:* is everyone");
        assert!(!ok("User:carol", Read, Group, "h"));
        assert!(!ok("User:carol", Read, Topic, "orders"), "no ACL denies");
        assert!(ok("User:ops", DescribeConfigs, Cluster, CLUSTER_NAME));
        assert!(!ok("User:ops", Alter, Cluster, CLUSTER_NAME));
        assert!(authorize_any(&acls, "User:alice", "h", Write, Topic));
        assert!(!authorize_any(&acls, "User:carol", "h", Write, Topic));

        let mut by_host = acl(Topic, "t", Literal, "User:dan", Read, Allow);
        by_host.host = "10.0.0.9".into();
        assert!(authorize(
            &[by_host.clone()],
            "User:dan",
            "10.0.0.9",
            Read,
            Topic,
            "t"
        ));
        assert!(!authorize(
            &[by_host],
            "User:dan",
            "10.0.0.1",
            Read,
            Topic,
            "t"
        ));
    }

    #[test]
    fn filters_match_as_kafka_does() {
        use ResourceType::*;
        let a = acl(
            Topic,
            "logs-",
            PatternType::Prefixed,
            "User:alice",
            Operation::Read,
            Permission::Allow,
        );
        let f = |rt, name: Option<&str>, pattern, op| Filter {
            resource_type: rt,
            name: name.map(String::from),
            pattern,
            principal: None,
            host: None,
            operation: op,
            permission: ANY,
        };
        assert!(f(ANY, None, ANY, ANY).matches(&a));
        assert!(f(
            Topic.code(),
            Some("logs-"),
            PatternType::Prefixed.code(),
            ANY
        )
        .matches(&a));
        assert!(!f(
            Topic.code(),
            Some("logs-"),
            PatternType::Literal.code(),
            ANY
        )
        .matches(&a));
        assert!(f(Topic.code(), Some("logs-app"), MATCH, ANY).matches(&a));
        assert!(!f(Topic.code(), Some("other"), MATCH, ANY).matches(&a));
        assert!(!f(Group.code(), None, ANY, ANY).matches(&a));
        assert!(!f(ANY, None, ANY, Operation::Write.code()).matches(&a));
        assert!(f(0, None, ANY, ANY).check().is_err());
        assert!(f(ANY, None, 9, ANY).check().is_err());
        assert!(a.check().is_ok());
        let mut bad = a.clone();
        bad.principal = "alice".into();
        assert!(bad.check().is_err());
        let mut bad = a;
        bad.resource_type = Cluster;
        assert!(bad.check().is_err());
        assert_eq!(
            Operation::parse("describe-configs"),
            Some(Operation::DescribeConfigs)
        );
        assert_eq!(ResourceType::from_code(5), Some(TransactionalId));
    }
}

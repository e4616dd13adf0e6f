//! Who a client is and what it may do: listeners and their security
//! protocols (`listener`), TLS (`tls`), SASL PLAIN and SCRAM
//! (`sasl`, `scram`), each connection's authentication state
//! (`session`), the users' credentials and the ACLs (`store`) and the
//! authorizer that checks a request against them (`acl`).
//!
//! A PLAINTEXT listener works as a broker without security does: no
//! authentication and no ACLs. Every other listener authenticates its
//! clients (a client certificate on SSL with `--tls-client-ca`, else
//! `User:ANONYMOUS`; SASL on SASL_*) and checks every request against the
//! ACLs, with `--super-users` exempt.

pub mod acl;
pub mod listener;
pub mod scram;
pub mod session;
pub mod store;
pub mod tls;

pub use listener::{Listener, Protocol};

/// The principal of a client no mechanism named (Kafka's).
pub const ANONYMOUS: &str = "User:ANONYMOUS";

use std::rc::Rc;
use std::sync::Arc;

use crate::shard::Shard;
use store::Security;

/// Changes the users and ACLs: on shard 0, one change at a time, `f`
/// applied to a copy, the copy stored durably and then sent to every
/// shard (on a node of a cluster: proposed to the metadata log, which
/// every node applies). `f`'s result is returned when the change is
/// stored; an error from `f` changes nothing. `f` may run more than once
/// (a cluster's change made against a state another change overtook is
/// made again).
pub async fn update<R, F>(shard: &Rc<Shard>, f: F) -> Result<R, String>
where
    R: Send + 'static,
    F: Fn(&mut Security) -> Result<R, String> + Send + 'static,
{
    if shard.cfg.cluster.is_some() {
        return shard
            .call(0, move |s| async move { update_cluster(&s, f).await })
            .await
            .unwrap_or_else(|_| Err("the broker is stopping".into()));
    }
    let work = move |s: Rc<Shard>| async move {
        let _one_at_a_time = s.security_gate.acquire_permit(1).await;
        let mut next = (*s.security()).clone();
        let r = f(&mut next)?;
        let (dir, stored) = (s.cfg.data_dir.clone(), next.clone());
        glommio::executor()
            .spawn_blocking(move || store::store(&dir, &stored))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "users and ACLs not stored");
                e.to_string()
            })?;
        let next = Arc::new(next);
        let mut waits = Vec::new();
        for target in 0..s.shards {
            let next = next.clone();
            waits.push(s.call(target, move |t| async move { t.set_security(next) }));
        }
        for w in waits {
            let _ = w.await;
        }
        Ok(r)
    };
    shard
        .call(0, work)
        .await
        .unwrap_or_else(|_| Err("the broker is stopping".into()))
}

/// Attempts of a cluster's security change that another overtook.
const UPDATE_ATTEMPTS_MAX: usize = 5;

async fn update_cluster<R, F>(shard: &Rc<Shard>, f: F) -> Result<R, String>
where
    F: Fn(&mut Security) -> Result<R, String>,
{
    use crate::cluster::node::ProposeError;
    use crate::cluster::state::{Command, Refused};
    let handle = shard
        .cluster_handle()
        .cloned()
        .ok_or("this node's metadata log is not running")?;
    for _ in 0..UPDATE_ATTEMPTS_MAX {
        let (version, current) = shard
            .cluster_view()
            .map(|v| (v.state.security_version, v.state.security.clone()))
            .ok_or("the cluster is forming")?;
        let mut next = (*current).clone();
        let r = f(&mut next)?;
        match handle
            .propose(Command::SetSecurity {
                based_on: version,
                security: next,
            })
            .await
        {
            Ok(()) => return Ok(r),
            Err(ProposeError::Refused(Refused::StaleSecurity { .. })) => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!(
        "{UPDATE_ATTEMPTS_MAX} other changes to users and ACLs came first; try again"
    ))
}

/// On a node of a cluster, once its metadata log runs: users and ACLs
/// written into this node's data directory while it was stopped
/// (`sluice user create --data-dir`, the first administrator) seed the
/// cluster's when it has none yet. A node whose proposal another
/// overtook leaves the cluster's as they are.
pub async fn seed_cluster(shard: &Rc<Shard>, local: Security) {
    if local == Security::default() {
        return;
    }
    let empty = shard
        .cluster_view()
        .is_some_and(|v| v.state.security_version == 0);
    if !empty {
        return;
    }
    let users = local.users.len();
    let Some(handle) = shard.cluster_handle().cloned() else {
        return;
    };
    let cmd = crate::cluster::state::Command::SetSecurity {
        based_on: 0,
        security: local,
    };
    match handle.propose(cmd).await {
        Ok(()) => tracing::info!(
            users,
            "the cluster's users and ACLs seeded from this node's data directory"
        ),
        Err(e) => {
            tracing::info!(error = %e, "this node's users and ACLs did not seed the cluster's")
        }
    }
}

/// What one request's session may do: every request on a PLAINTEXT
/// listener and every request of a super user; else what the ACLs allow
/// its principal from its host.
pub struct Authz<'a> {
    session: &'a session::Session,
    /// `None`: not checked (PLAINTEXT, or a super user).
    acls: Option<Arc<Security>>,
}

impl<'a> Authz<'a> {
    pub fn new(shard: &Shard, session: &'a session::Session) -> Authz<'a> {
        let exempt = !session.protocol.authorizes()
            || session
                .principal
                .as_ref()
                .is_some_and(|p| shard.cfg.super_users.contains(p));
        Authz {
            session,
            acls: (!exempt).then(|| shard.security()),
        }
    }

    pub fn allows(&self, op: acl::Operation, rt: acl::ResourceType, name: &str) -> bool {
        match &self.acls {
            None => true,
            Some(s) => acl::authorize(&s.acls, self.principal(), &self.session.host, op, rt, name),
        }
    }

    pub fn topic(&self, op: acl::Operation, name: &str) -> bool {
        self.allows(op, acl::ResourceType::Topic, name)
    }

    pub fn group(&self, op: acl::Operation, name: &str) -> bool {
        self.allows(op, acl::ResourceType::Group, name)
    }

    pub fn cluster(&self, op: acl::Operation) -> bool {
        self.allows(op, acl::ResourceType::Cluster, acl::CLUSTER_NAME)
    }

    /// `op` on some resource of the type.
    pub fn any(&self, op: acl::Operation, rt: acl::ResourceType) -> bool {
        match &self.acls {
            None => true,
            Some(s) => acl::authorize_any(&s.acls, self.principal(), &self.session.host, op, rt),
        }
    }

    fn principal(&self) -> &str {
        self.session.principal.as_deref().unwrap_or(ANONYMOUS)
    }
}

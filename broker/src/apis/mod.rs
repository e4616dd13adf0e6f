//! The Kafka APIs this broker serves, one file per API, and the dispatch
//! from a decoded request to its handler.
//!
//! A handler runs in two phases. What must happen in request order (an
//! append, a metadata change) runs before the handler returns; what only
//! waits (for durability, for the group coordinator) is returned as a
//! [`Reply::Later`] future, so later requests on the connection proceed
//! while it waits and answers still go out in request order. A fetch,
//! which waits for data and then reads it, is a [`Reply::Task`].

use std::rc::Rc;

use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use sluice_net::request::Request;
use sluice_net::response::{encode_response, encode_response_chunks, ResponseChunks};

use kafka_protocol::ResponseError;

use crate::metadata::Refusal;
use crate::security::acl::{Operation, ResourceType};
use crate::security::session::Session;
use crate::security::Authz;
use crate::shard::{LocalFuture, Shard};
use kafka_protocol::protocol::StrBytes;

mod alter_configs;
mod alter_partition_reassignments;
mod alter_user_scram_credentials;
mod api_versions;
mod create_acls;
mod create_partitions;
mod create_topics;
mod delete_acls;
mod delete_groups;
mod delete_topics;
mod describe_acls;
mod describe_cluster;
mod describe_configs;
mod describe_groups;
pub mod describe_quorum;
mod describe_user_scram_credentials;
mod fetch;
mod find_coordinator;
mod heartbeat;
mod incremental_alter_configs;
mod init_producer_id;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod list_partition_reassignments;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod offset_for_leader_epoch;
mod produce;
mod sync_group;
pub mod unsupported;

/// (API, lowest version, highest version) served. The ceilings are the
/// last versions that name topics by name (newer Produce and Fetch
/// versions name them by id only).
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::DescribeQuorum, 0, 1),
    (ApiKey::AlterPartitionReassignments, 0, 0),
    (ApiKey::ListPartitionReassignments, 0, 0),
    // Answered by the connection's session (`security::session`).
    (ApiKey::SaslHandshake, 1, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
];

/// The served version range of `api_key`, if it is served at all.
pub fn supported(api_key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|s| s.0 == api_key)
        .map(|s| (s.1, s.2))
}

/// What a handler answers.
pub enum Reply {
    /// No answer at all (acks=0 produce).
    Nothing,
    Now(ResponseChunks),
    /// An answer that only waits for a result produced elsewhere (a sync,
    /// the coordinator). The connection's writer polls it in its turn, so
    /// the answer is encoded and written in one wake-up.
    Later(LocalFuture<ResponseChunks>),
    /// An answer with work of its own: it runs as a task from the moment
    /// its request is read, while earlier answers are still written.
    Task(LocalFuture<ResponseChunks>),
}

/// The request's identity, for building its answer.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub api_key: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    /// The listener the request came in on (its addresses are the ones
    /// to tell the client).
    pub listener: usize,
}

impl Ctx {
    /// Encodes an answer whose body carries no record sets.
    pub fn answer(&self, body: ResponseKind) -> ResponseChunks {
        crate::metrics::record_errors(
            self.api_key as i16,
            crate::metrics::error_codes(&body).into_iter(),
        );
        match encode_response(self.correlation_id, self.api_key, self.version, &body) {
            Ok(b) => ResponseChunks::single(b),
            Err(e) => self.unanswerable(e),
        }
    }

    /// Encodes an answer whose body carries record-set placeholders
    /// standing for `records`, in encoding order.
    pub fn answer_with_records<E: kafka_protocol::protocol::Encodable>(
        &self,
        body: &E,
        records: Vec<Vec<bytes::Bytes>>,
    ) -> ResponseChunks {
        encode_response_chunks(
            self.correlation_id,
            self.api_key,
            self.version,
            body,
            records,
        )
        .unwrap_or_else(|e| self.unanswerable(e))
    }

    /// A handler set a field its version lacks (a bug): the codec refuses
    /// to encode. The connection is closed (an empty answer tells the
    /// writer so) and the shard keeps serving every other one.
    fn unanswerable(&self, e: sluice_net::response::EncodeError) -> ResponseChunks {
        tracing::error!(correlation_id = self.correlation_id, error = %e, "answer cannot be encoded; closing the connection");
        ResponseChunks::default()
    }
}

/// Runs the handler for a decoded request. `frame` is the address range of
/// the frame it was decoded from (to count copies of record bytes).
pub async fn dispatch(
    shard: &Rc<Shard>,
    req: Request,
    frame: (usize, usize),
    session: &Session,
    peer: &str,
) -> Reply {
    let ctx = Ctx {
        api_key: req.api_key,
        version: req.version,
        correlation_id: req.header.correlation_id,
        listener: session.listener,
    };
    sluice_storage::stall::doing("request", req.api_key as i32);
    let started = std::time::Instant::now();
    let reply = handle(shard, ctx, req, frame, session, peer).await;
    timed(ctx, started, reply)
}

/// Counts the request in the shard's metrics once its answer is ready.
fn timed(ctx: Ctx, started: std::time::Instant, reply: Reply) -> Reply {
    let done =
        move || crate::metrics::record_request(ctx.api_key as i16, ctx.version, started.elapsed());
    let then_done = move |f: LocalFuture<ResponseChunks>| -> LocalFuture<ResponseChunks> {
        Box::pin(async move {
            let a = f.await;
            done();
            a
        })
    };
    match reply {
        Reply::Later(f) => Reply::Later(then_done(f)),
        Reply::Task(f) => Reply::Task(then_done(f)),
        ready => {
            done();
            ready
        }
    }
}

async fn handle(
    shard: &Rc<Shard>,
    ctx: Ctx,
    req: Request,
    frame: (usize, usize),
    session: &Session,
    peer: &str,
) -> Reply {
    let authz = Authz::new(shard, session);
    if let Some(refused) = refused_whole(ctx, &req.body, &authz) {
        return Reply::Now(refused);
    }
    let authz = &authz;
    match req.body {
        RequestKind::FindCoordinator(r) => {
            Reply::Now(find_coordinator::handle(shard, ctx, r, authz))
        }
        RequestKind::JoinGroup(r) => {
            let client = req
                .header
                .client_id
                .map(|c| c.to_string())
                .unwrap_or_default();
            join_group::handle(shard, ctx, r, client, format!("/{peer}")).await
        }
        RequestKind::SyncGroup(r) => sync_group::handle(shard, ctx, r).await,
        RequestKind::Heartbeat(r) => Reply::Now(heartbeat::handle(shard, ctx, r).await),
        RequestKind::LeaveGroup(r) => Reply::Now(leave_group::handle(shard, ctx, r).await),
        RequestKind::OffsetCommit(r) => offset_commit::handle(shard, ctx, r, authz).await,
        RequestKind::OffsetFetch(r) => Reply::Now(offset_fetch::handle(shard, ctx, r, authz).await),
        RequestKind::ListGroups(r) => Reply::Now(list_groups::handle(shard, ctx, r, authz).await),
        RequestKind::DescribeGroups(r) => {
            Reply::Now(describe_groups::handle(shard, ctx, r, authz).await)
        }
        RequestKind::DeleteGroups(r) => {
            Reply::Now(delete_groups::handle(shard, ctx, r, authz).await)
        }
        RequestKind::OffsetDelete(r) => {
            Reply::Now(offset_delete::handle(shard, ctx, r, authz).await)
        }
        RequestKind::ApiVersions(_) => Reply::Now(api_versions::handle(ctx)),
        RequestKind::Metadata(r) => Reply::Now(metadata::handle(shard, ctx, r, authz).await),
        RequestKind::Produce(r) => produce::handle(shard, ctx, r, frame, authz).await,
        RequestKind::Fetch(r) => fetch::handle(shard, ctx, r, authz),
        RequestKind::ListOffsets(r) => Reply::Now(list_offsets::handle(shard, ctx, r, authz).await),
        RequestKind::OffsetForLeaderEpoch(r) => {
            Reply::Now(offset_for_leader_epoch::handle(shard, ctx, r, authz).await)
        }
        RequestKind::CreateTopics(r) => {
            Reply::Now(create_topics::handle(shard, ctx, r, authz).await)
        }
        RequestKind::DeleteTopics(r) => {
            Reply::Now(delete_topics::handle(shard, ctx, r, authz).await)
        }
        RequestKind::CreatePartitions(r) => {
            Reply::Now(create_partitions::handle(shard, ctx, r, authz).await)
        }
        RequestKind::DescribeConfigs(r) => {
            Reply::Now(describe_configs::handle(shard, ctx, r, authz))
        }
        RequestKind::DescribeCluster(r) => Reply::Now(describe_cluster::handle(shard, ctx, r)),
        RequestKind::DescribeQuorum(r) => Reply::Now(describe_quorum::handle(shard, ctx, r)),
        RequestKind::AlterConfigs(r) => {
            Reply::Now(alter_configs::handle(shard, ctx, r, authz).await)
        }
        RequestKind::IncrementalAlterConfigs(r) => {
            Reply::Now(incremental_alter_configs::handle(shard, ctx, r, authz).await)
        }
        RequestKind::InitProducerId(r) => Reply::Now(init_producer_id::handle(shard, ctx, r).await),
        RequestKind::AlterPartitionReassignments(r) => {
            Reply::Now(alter_partition_reassignments::handle(shard, ctx, r).await)
        }
        RequestKind::ListPartitionReassignments(r) => {
            Reply::Now(list_partition_reassignments::handle(shard, ctx, r))
        }
        RequestKind::CreateAcls(r) => Reply::Now(create_acls::handle(shard, ctx, r, authz).await),
        RequestKind::DescribeAcls(r) => Reply::Now(describe_acls::handle(shard, ctx, r)),
        RequestKind::DeleteAcls(r) => Reply::Now(delete_acls::handle(shard, ctx, r, authz).await),
        RequestKind::AlterUserScramCredentials(r) => {
            Reply::Now(alter_user_scram_credentials::handle(shard, ctx, r, authz).await)
        }
        RequestKind::DescribeUserScramCredentials(r) => {
            Reply::Now(describe_user_scram_credentials::handle(shard, ctx, r))
        }
        // `decode_request` only yields the APIs listed in SUPPORTED (the
        // connection answers the SASL ones).
        _ => unreachable!("no handler for a served API: {:?}", ctx.api_key),
    }
}

/// The answer to a request the ACLs refuse as a whole (a group member's
/// request, a cluster-wide one), with the API's authorization error in
/// its top-level error field; `None` for requests allowed, or checked
/// item by item in their handlers.
fn refused_whole(ctx: Ctx, body: &RequestKind, authz: &Authz) -> Option<ResponseChunks> {
    use kafka_protocol::messages::*;
    use Operation::*;
    let group = ResponseError::GroupAuthorizationFailed.code();
    let cluster = ResponseError::ClusterAuthorizationFailed.code();
    let (kind, code) = match body {
        RequestKind::JoinGroup(r) if !authz.group(Read, &r.group_id) => (
            ResponseKind::JoinGroup(
                JoinGroupResponse::default()
                    .with_protocol_name((ctx.version < 7).then(StrBytes::default))
                    .with_error_code(group),
            ),
            group,
        ),
        RequestKind::SyncGroup(r) if !authz.group(Read, &r.group_id) => (
            ResponseKind::SyncGroup(SyncGroupResponse::default().with_error_code(group)),
            group,
        ),
        RequestKind::Heartbeat(r) if !authz.group(Read, &r.group_id) => (
            ResponseKind::Heartbeat(HeartbeatResponse::default().with_error_code(group)),
            group,
        ),
        RequestKind::LeaveGroup(r) if !authz.group(Read, &r.group_id) => (
            ResponseKind::LeaveGroup(LeaveGroupResponse::default().with_error_code(group)),
            group,
        ),
        RequestKind::DescribeCluster(_) if !authz.cluster(Describe) => (
            ResponseKind::DescribeCluster(
                DescribeClusterResponse::default().with_error_code(cluster),
            ),
            cluster,
        ),
        RequestKind::DescribeQuorum(_) if !authz.cluster(Describe) => (
            ResponseKind::DescribeQuorum(
                DescribeQuorumResponse::default().with_error_code(cluster),
            ),
            cluster,
        ),
        RequestKind::AlterPartitionReassignments(_) if !authz.cluster(Alter) => (
            ResponseKind::AlterPartitionReassignments(
                AlterPartitionReassignmentsResponse::default().with_error_code(cluster),
            ),
            cluster,
        ),
        RequestKind::ListPartitionReassignments(_) if !authz.cluster(Describe) => (
            ResponseKind::ListPartitionReassignments(
                ListPartitionReassignmentsResponse::default().with_error_code(cluster),
            ),
            cluster,
        ),
        // Kafka's rule for a producer without a transactional id:
        // IDEMPOTENT_WRITE on the cluster, or WRITE on any topic.
        RequestKind::InitProducerId(r)
            if r.transactional_id.is_none()
                && !authz.cluster(IdempotentWrite)
                && !authz.any(Write, ResourceType::Topic) =>
        {
            (
                ResponseKind::InitProducerId(
                    InitProducerIdResponse::default()
                        .with_producer_id(ProducerId(-1))
                        .with_producer_epoch(-1)
                        .with_error_code(cluster),
                ),
                cluster,
            )
        }
        RequestKind::OffsetDelete(r) if !authz.group(Delete, &r.group_id) => (
            ResponseKind::OffsetDelete(OffsetDeleteResponse::default().with_error_code(group)),
            group,
        ),
        RequestKind::DescribeAcls(_) if !authz.cluster(Describe) => (
            ResponseKind::DescribeAcls(DescribeAclsResponse::default().with_error_code(cluster)),
            cluster,
        ),
        RequestKind::DescribeUserScramCredentials(_) if !authz.cluster(DescribeConfigs) => (
            ResponseKind::DescribeUserScramCredentials(
                DescribeUserScramCredentialsResponse::default().with_error_code(cluster),
            ),
            cluster,
        ),
        _ => return None,
    };
    tracing::debug!(api = ?ctx.api_key, code, "refused by the ACLs");
    Some(ctx.answer(kind))
}

/// Runs `f` on the controller shard; `None` when the broker is stopping.
pub async fn on_controller<R, F, Fut>(shard: &Rc<Shard>, f: F) -> Option<R>
where
    R: Send + 'static,
    F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = R> + 'static,
{
    shard.call(0, f).await.ok()
}

/// Awaits an answer a coordinator sends back over a channel; `gone` when
/// the shard or the sender went away (the broker is stopping).
pub async fn answer_from<T>(
    rx: Result<flume::Receiver<T>, crate::shard::ShardGone>,
    gone: impl FnOnce() -> T,
) -> T {
    match rx {
        Ok(rx) => rx.recv_async().await.unwrap_or_else(|_| gone()),
        Err(_) => gone(),
    }
}

/// Admin requests name several items (topics, resources); some are refused
/// before the controller sees them. Runs `f` on the controller for the
/// `Ok` items and returns one result per item, in order: the early
/// refusals, and the controller's answers for the rest (NOT_CONTROLLER
/// while the broker is stopping).
pub async fn on_controller_each<T, R, F, Fut>(
    shard: &Rc<Shard>,
    items: Vec<Result<T, Refusal>>,
    f: F,
) -> Vec<Result<R, Refusal>>
where
    T: Send + 'static,
    R: Send + 'static,
    F: FnOnce(Rc<Shard>, Vec<T>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Vec<Result<R, Refusal>>> + 'static,
{
    let mut refused = Vec::with_capacity(items.len());
    let mut todo = Vec::new();
    for item in items {
        match item {
            Ok(t) => {
                refused.push(None);
                todo.push(t);
            }
            Err(e) => refused.push(Some(e)),
        }
    }
    let n = todo.len();
    let answers = if n == 0 {
        Vec::new()
    } else {
        on_controller(shard, move |s| f(s, todo))
            .await
            .unwrap_or_else(|| {
                let stopping = Refusal::new(ResponseError::NotController, "the broker is stopping");
                (0..n).map(|_| Err(stopping.clone())).collect()
            })
    };
    assert_eq!(answers.len(), n, "one controller answer per item");
    let mut answers = answers.into_iter();
    refused
        .into_iter()
        .map(|r| match r {
            Some(e) => Err(e),
            None => answers.next().expect("counted above"),
        })
        .collect()
}

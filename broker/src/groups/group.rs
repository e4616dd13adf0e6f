//! One consumer group and the classic group protocol as Kafka runs it:
//! members join (a first join without a member id is answered with
//! MEMBER_ID_REQUIRED and a fresh id), a rebalance collects every known
//! member's join or drops it at the rebalance timeout, the generation goes
//! up, the leader gets the member list and sends the assignments in
//! SyncGroup, and heartbeats keep members alive (a missed session timeout
//! expels a member and starts a rebalance). Static members
//! (group.instance.id) that rejoin while the group is stable get a new
//! member id and their old assignment without a rebalance.
//!
//! The state machine does no I/O and reads no clock: callers pass `now`,
//! and waiting joins and syncs are answered through channels.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

/// What a join is answered with. The strings every member's answer shares
/// are `StrBytes`, so answering a round of joins copies none of them.
#[derive(Debug, Clone, Default)]
pub struct JoinResult {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<StrBytes>,
    pub protocol_name: Option<StrBytes>,
    pub leader: StrBytes,
    pub member_id: StrBytes,
    /// For the leader: every member's id, instance id and metadata.
    pub members: Vec<(StrBytes, Option<StrBytes>, Bytes)>,
}

impl JoinResult {
    pub fn error(e: ResponseError, member_id: &str) -> JoinResult {
        JoinResult {
            error: e.code(),
            generation: -1,
            member_id: StrBytes::from_string(member_id.to_string()),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct SyncResult {
    pub error: i16,
    pub protocol_type: Option<StrBytes>,
    pub protocol_name: Option<StrBytes>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(e: ResponseError) -> SyncResult {
        SyncResult {
            error: e.code(),
            ..Default::default()
        }
    }
}

/// A join as the coordinator sees it.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a first join must come back with the id it is given.
    pub require_known_member_id: bool,
}

pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub last_seen: Instant,
    join: Option<flume::Sender<JoinResult>>,
    sync: Option<flume::Sender<SyncResult>>,
}

pub struct Group {
    pub id: String,
    pub state: State,
    pub generation: i32,
    pub protocol_type: Option<StrBytes>,
    pub protocol: Option<StrBytes>,
    pub leader: Option<StrBytes>,
    /// In the order they joined: the first is the next leader when the
    /// leader leaves.
    pub members: BTreeMap<u64, Member>,
    next_seq: u64,
    /// Ids handed out with MEMBER_ID_REQUIRED and not yet used, with when
    /// and the session timeout they asked for. A rebalance waits for them
    /// too (as Kafka does), so members that start together land in one
    /// generation; one that never comes back is dropped at its session
    /// timeout, or when the rebalance times out.
    pending: HashMap<String, (Instant, Duration)>,
    rebalance_deadline: Option<Instant>,
    /// Nothing in the group can time out before this (members' sessions,
    /// pending ids, the rebalance): `tick` skips it until then. Cleared by
    /// every change but a heartbeat, which only moves a deadline later.
    next_tick: Option<Instant>,
}

fn reply<T>(tx: &flume::Sender<T>, v: T) {
    // The requester may have gone (connection closed); nothing to do then.
    let _ = tx.try_send(v);
}

impl Group {
    pub fn new(id: &str) -> Group {
        Group {
            id: id.to_string(),
            state: State::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            next_seq: 0,
            pending: HashMap::new(),
            rebalance_deadline: None,
            next_tick: None,
        }
    }

    /// No members and no member ids handed out that may still come back.
    pub fn is_idle(&self) -> bool {
        self.state == State::Empty && self.pending.is_empty()
    }

    fn seq_of(&self, member_id: &str) -> Option<u64> {
        self.members
            .iter()
            .find(|(_, m)| m.id == member_id)
            .map(|(&s, _)| s)
    }

    pub fn member(&self, member_id: &str) -> Option<&Member> {
        self.seq_of(member_id).map(|s| &self.members[&s])
    }

    fn member_mut(&mut self, member_id: &str) -> Option<&mut Member> {
        let s = self.seq_of(member_id)?;
        self.members.get_mut(&s)
    }

    fn new_member_id(client_id: &str) -> String {
        format!("{client_id}-{}", crate::metadata::new_topic_id())
    }

    /// Handles a JoinGroup; the answer comes on `tx` (now, or when the
    /// rebalance completes).
    pub fn join(&mut self, req: JoinRequest, now: Instant, tx: flume::Sender<JoinResult>) {
        self.next_tick = None;
        if !self.members.is_empty()
            && self.protocol_type.as_deref() != Some(req.protocol_type.as_str())
            || req.protocols.is_empty()
            || !self.members.is_empty() && !self.supports_any(&req.protocols)
        {
            return reply(
                &tx,
                JoinResult::error(ResponseError::InconsistentGroupProtocol, &req.member_id),
            );
        }
        let mut member_id = req.member_id.clone();
        if member_id.is_empty() {
            if let Some(old) = req
                .instance_id
                .as_ref()
                .and_then(|i| {
                    self.members
                        .values()
                        .find(|m| m.instance_id.as_ref() == Some(i))
                })
                .map(|m| m.id.clone())
            {
                return self.static_rejoin(&old, req, now, tx);
            }
            if self.members.len() + self.pending.len() >= sluice_tuning::limits::GROUP_MEMBERS_MAX {
                return reply(
                    &tx,
                    JoinResult::error(ResponseError::GroupMaxSizeReached, &req.member_id),
                );
            }
            member_id = Group::new_member_id(&req.client_id);
            if req.require_known_member_id && req.instance_id.is_none() {
                self.pending
                    .insert(member_id.clone(), (now, req.session_timeout));
                return reply(
                    &tx,
                    JoinResult::error(ResponseError::MemberIdRequired, &member_id),
                );
            }
        } else if self.member(&member_id).is_none() && self.pending.remove(&member_id).is_none() {
            return reply(
                &tx,
                JoinResult::error(ResponseError::UnknownMemberId, &member_id),
            );
        }
        match self.member_mut(&member_id) {
            Some(m) => {
                // A follower rejoining a stable group with nothing changed
                // gets the current generation without a rebalance.
                let unchanged = m.protocols == req.protocols;
                m.protocols = req.protocols;
                m.session_timeout = req.session_timeout;
                m.rebalance_timeout = req.rebalance_timeout;
                m.last_seen = now;
                if self.state == State::Stable
                    && unchanged
                    && self.leader.as_deref() != Some(member_id.as_str())
                {
                    let r = self.join_result(&member_id);
                    return reply(&tx, r);
                }
                self.member_mut(&member_id).expect("present").join = Some(tx);
            }
            None => {
                let seq = self.next_seq;
                self.next_seq += 1;
                self.members.insert(
                    seq,
                    Member {
                        id: member_id.clone(),
                        instance_id: req.instance_id,
                        client_id: req.client_id,
                        client_host: req.client_host,
                        session_timeout: req.session_timeout,
                        rebalance_timeout: req.rebalance_timeout,
                        protocols: req.protocols,
                        assignment: Bytes::new(),
                        last_seen: now,
                        join: Some(tx),
                        sync: None,
                    },
                );
                if self.protocol_type.is_none() {
                    self.protocol_type = Some(StrBytes::from_string(req.protocol_type));
                }
            }
        }
        if self.state != State::PreparingRebalance {
            self.prepare_rebalance(now);
        }
        self.try_complete_join(now, false);
    }

    /// A static member back with a new member id: it takes the old
    /// member's place (and assignment). In a stable group, unless it led
    /// the group, that is all: no rebalance.
    fn static_rejoin(
        &mut self,
        old: &str,
        req: JoinRequest,
        now: Instant,
        tx: flume::Sender<JoinResult>,
    ) {
        let new_id = Group::new_member_id(&req.client_id);
        let was_leader = self.leader.as_deref() == Some(old);
        let m = self.member_mut(old).expect("found above");
        m.id = new_id.clone();
        m.client_id = req.client_id;
        m.client_host = req.client_host;
        m.session_timeout = req.session_timeout;
        m.rebalance_timeout = req.rebalance_timeout;
        m.protocols = req.protocols;
        m.last_seen = now;
        // Anything the old incarnation waited for is answered: it is fenced.
        if let Some(j) = m.join.take() {
            reply(&j, JoinResult::error(ResponseError::FencedInstanceId, old));
        }
        if let Some(s) = m.sync.take() {
            reply(&s, SyncResult::error(ResponseError::FencedInstanceId));
        }
        if was_leader {
            self.leader = Some(StrBytes::from_string(new_id.clone()));
        }
        if self.state == State::Stable && !was_leader {
            let r = self.join_result(&new_id);
            return reply(&tx, r);
        }
        self.member_mut(&new_id).expect("renamed").join = Some(tx);
        if self.state != State::PreparingRebalance {
            self.prepare_rebalance(now);
        }
        self.try_complete_join(now, false);
    }

    fn supports_any(&self, protocols: &[(String, Bytes)]) -> bool {
        protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    fn prepare_rebalance(&mut self, now: Instant) {
        self.state = State::PreparingRebalance;
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        self.rebalance_deadline = Some(now + timeout);
        for m in self.members.values_mut() {
            if let Some(s) = m.sync.take() {
                reply(&s, SyncResult::error(ResponseError::RebalanceInProgress));
            }
        }
    }

    /// Completes the rebalance once every member has joined, or, with
    /// `deadline_passed`, drops those that have not.
    fn try_complete_join(&mut self, now: Instant, deadline_passed: bool) {
        if self.state != State::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.join.is_some()) && self.pending.is_empty();
        if !all_joined && !deadline_passed {
            return;
        }
        self.pending.clear();
        self.members.retain(|_, m| m.join.is_some());
        self.generation += 1;
        self.rebalance_deadline = None;
        if self.members.is_empty() {
            self.state = State::Empty;
            self.leader = None;
            self.protocol = None;
            self.protocol_type = None;
            return;
        }
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.values().any(|m| m.id == **l))
        {
            self.leader = self
                .members
                .values()
                .next()
                .map(|m| StrBytes::from_string(m.id.clone()));
        }
        // The leader's most preferred protocol that every member supports.
        let leader = self.member(self.leader.as_deref().unwrap()).unwrap();
        self.protocol = leader
            .protocols
            .iter()
            .map(|(n, _)| n)
            .find(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == *n))
            })
            .map(|n| StrBytes::from_string(n.clone()));
        self.state = State::CompletingRebalance;
        // Every answer shares one head; only the leader's carries the
        // member list.
        let head = self.join_result_head();
        let mut members = Some(self.member_list());
        let leader = self.leader.clone();
        for m in self.members.values_mut() {
            m.last_seen = now;
            let Some(j) = m.join.take() else { continue };
            let mut r = head.clone();
            r.member_id = StrBytes::from_string(m.id.clone());
            if leader.as_deref() == Some(m.id.as_str()) {
                r.members = members.take().unwrap_or_default();
            }
            reply(&j, r);
        }
    }

    /// A successful join's answer without its member id and member list.
    fn join_result_head(&self) -> JoinResult {
        JoinResult {
            error: 0,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: StrBytes::default(),
            members: Vec::new(),
        }
    }

    /// What the leader learns of every member: id, instance id and its
    /// metadata for the group's protocol.
    fn member_list(&self) -> Vec<(StrBytes, Option<StrBytes>, Bytes)> {
        let protocol = self.protocol.as_deref().unwrap_or_default();
        self.members
            .values()
            .map(|m| {
                let meta = m
                    .protocols
                    .iter()
                    .find(|(n, _)| n == protocol)
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default();
                (
                    StrBytes::from_string(m.id.clone()),
                    m.instance_id.clone().map(StrBytes::from_string),
                    meta,
                )
            })
            .collect()
    }

    /// A follower's answer (no member list).
    fn join_result(&self, member_id: &str) -> JoinResult {
        JoinResult {
            member_id: StrBytes::from_string(member_id.to_string()),
            ..self.join_result_head()
        }
    }

    /// Checks a member and generation as every request after the join does.
    pub fn check(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), i16> {
        if let Some(i) = instance_id {
            let holder = self
                .members
                .values()
                .find(|m| m.instance_id.as_deref() == Some(i));
            if holder.is_some_and(|m| m.id != member_id) {
                return Err(ResponseError::FencedInstanceId.code());
            }
        }
        if self.member(member_id).is_none() {
            return Err(ResponseError::UnknownMemberId.code());
        }
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration.code());
        }
        Ok(())
    }

    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
        tx: flume::Sender<SyncResult>,
    ) {
        self.next_tick = None;
        if let Err(code) = self.check(member_id, instance_id, generation) {
            return reply(
                &tx,
                SyncResult {
                    error: code,
                    ..Default::default()
                },
            );
        }
        let ok = |g: &Group, assignment: Bytes| SyncResult {
            error: 0,
            protocol_type: g.protocol_type.clone(),
            protocol_name: g.protocol.clone(),
            assignment,
        };
        match self.state {
            State::PreparingRebalance => {
                reply(&tx, SyncResult::error(ResponseError::RebalanceInProgress))
            }
            State::Stable => {
                let a = self.member(member_id).unwrap().assignment.clone();
                reply(&tx, ok(self, a))
            }
            State::Empty => reply(&tx, SyncResult::error(ResponseError::UnknownMemberId)),
            State::CompletingRebalance => {
                let m = self.member_mut(member_id).unwrap();
                m.last_seen = now;
                m.sync = Some(tx);
                if self.leader.as_deref() != Some(member_id) {
                    return;
                }
                let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                for m in self.members.values_mut() {
                    m.assignment = given.remove(&m.id).unwrap_or_default();
                }
                self.state = State::Stable;
                let answers: Vec<(flume::Sender<SyncResult>, Bytes)> = self
                    .members
                    .values_mut()
                    .filter_map(|m| Some((m.sync.take()?, m.assignment.clone())))
                    .collect();
                for (tx, a) in answers {
                    reply(&tx, ok(self, a));
                }
            }
        }
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> i16 {
        if self.state == State::Empty {
            return ResponseError::UnknownMemberId.code();
        }
        if let Err(code) = self.check(member_id, instance_id, generation) {
            // A member that is still known stays alive while it sorts out
            // its generation.
            if let Some(m) = self.member_mut(member_id) {
                m.last_seen = now;
            }
            return code;
        }
        self.member_mut(member_id).unwrap().last_seen = now;
        match self.state {
            State::PreparingRebalance => ResponseError::RebalanceInProgress.code(),
            _ => 0,
        }
    }

    /// Removes members (LeaveGroup); returns an error code per member.
    pub fn leave(&mut self, members: &[(String, Option<String>)], now: Instant) -> Vec<i16> {
        self.next_tick = None;
        let mut out = Vec::with_capacity(members.len());
        let mut removed = false;
        for (id, instance) in members {
            let seq = match instance {
                Some(i) if id.is_empty() => self
                    .members
                    .iter()
                    .find(|(_, m)| m.instance_id.as_ref() == Some(i))
                    .map(|(&s, _)| s),
                Some(i) => match self.seq_of(id) {
                    Some(s) if self.members[&s].instance_id.as_ref() != Some(i) => {
                        out.push(ResponseError::FencedInstanceId.code());
                        continue;
                    }
                    s => s,
                },
                None => self.seq_of(id),
            };
            match seq {
                Some(s) => {
                    let m = self.members.remove(&s).unwrap();
                    if let Some(j) = m.join {
                        reply(&j, JoinResult::error(ResponseError::UnknownMemberId, &m.id));
                    }
                    removed = true;
                    out.push(0);
                }
                None => out.push(ResponseError::UnknownMemberId.code()),
            }
        }
        if removed {
            self.after_removal(now);
        }
        out
    }

    fn after_removal(&mut self, now: Instant) {
        if self.members.is_empty() {
            self.state = State::Empty;
            self.leader = None;
            self.protocol = None;
            self.protocol_type = None;
            self.rebalance_deadline = None;
            self.generation += 1;
            return;
        }
        if self.state == State::PreparingRebalance {
            self.try_complete_join(now, false);
        } else {
            self.prepare_rebalance(now);
        }
    }

    /// Expires members whose session timed out and ends rebalances whose
    /// timeout passed. Returns whether anything changed.
    pub fn tick(&mut self, now: Instant) -> bool {
        if self.next_tick.is_some_and(|t| now < t) {
            return false;
        }
        let changed = self.expire(now);
        self.next_tick = Some(self.next_deadline(now));
        changed
    }

    /// The earliest moment something in the group can time out, as it
    /// stands (an hour ahead when nothing can).
    fn next_deadline(&self, now: Instant) -> Instant {
        let pending = self.pending.values().map(|(at, session)| *at + *session);
        let rebalance = self
            .rebalance_deadline
            .filter(|_| self.state == State::PreparingRebalance);
        let sessions = self
            .members
            .values()
            .filter(|_| matches!(self.state, State::Stable | State::CompletingRebalance))
            .map(|m| m.last_seen + m.session_timeout);
        pending
            .chain(rebalance)
            .chain(sessions)
            .min()
            .unwrap_or(now + Duration::from_secs(3600))
    }

    fn expire(&mut self, now: Instant) -> bool {
        let mut changed = false;
        let before = self.pending.len();
        self.pending
            .retain(|_, (at, session)| now.duration_since(*at) < *session);
        if self.pending.len() != before && self.state == State::PreparingRebalance {
            self.try_complete_join(now, false);
            changed = true;
        }
        if self.state == State::PreparingRebalance
            && self.rebalance_deadline.is_some_and(|d| now >= d)
        {
            self.try_complete_join(now, true);
            changed = true;
        }
        if matches!(self.state, State::Stable | State::CompletingRebalance) {
            let before = self.members.len();
            self.members
                .retain(|_, m| now.duration_since(m.last_seen) < m.session_timeout);
            if self.members.len() != before {
                self.after_removal(now);
                changed = true;
            }
        }
        changed
    }

    /// Whether a member may commit offsets now (generation-checked commits).
    /// As Kafka does: a member of the current generation commits while
    /// the group is stable and while it prepares a rebalance (members
    /// commit what they processed before rejoining, under the generation
    /// that assigned it); between the joins and the leader's assignment,
    /// the new generation has no assignment to commit for yet.
    pub fn check_commit(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), i16> {
        self.check(member_id, instance_id, generation)?;
        if self.state == State::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress.code());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join_req(member_id: &str, instance: Option<&str>) -> JoinRequest {
        JoinRequest {
            member_id: member_id.into(),
            instance_id: instance.map(Into::into),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"m"))],
            require_known_member_id: true,
        }
    }

    fn join(
        g: &mut Group,
        id: &str,
        instance: Option<&str>,
        now: Instant,
    ) -> flume::Receiver<JoinResult> {
        let (tx, rx) = flume::bounded(1);
        g.join(join_req(id, instance), now, tx);
        rx
    }

    /// A group holds at most GROUP_MEMBERS_MAX members and member ids
    /// handed out; the next new member is refused, a known one is not.
    #[test]
    fn members_past_the_limit_are_refused() {
        let t0 = Instant::now();
        let mut g = Group::new("g");
        let max = sluice_tuning::limits::GROUP_MEMBERS_MAX;
        let mut first = None;
        for _ in 0..max {
            let r = join(&mut g, "", None, t0).recv().unwrap();
            assert_eq!(r.error, ResponseError::MemberIdRequired.code());
            first.get_or_insert(r.member_id);
        }
        let r = join(&mut g, "", None, t0).recv().unwrap();
        assert_eq!(r.error, ResponseError::GroupMaxSizeReached.code());
        // An id handed out before still joins.
        let rx = join(&mut g, &first.unwrap(), None, t0);
        assert_ne!(
            rx.try_recv().map(|r| r.error).unwrap_or(0),
            ResponseError::GroupMaxSizeReached.code()
        );
    }

    /// Two members: ids required first, both joins answered when the
    /// second arrives, one leader with the member list, assignments by
    /// sync; a late joiner forces a rebalance the others learn of by
    /// heartbeat; a silent member is expelled at its session timeout.
    #[test]
    fn join_sync_heartbeat_and_expiry() {
        let t0 = Instant::now();
        let mut g = Group::new("g");
        let r = join(&mut g, "", None, t0).recv().unwrap();
        assert_eq!(r.error, ResponseError::MemberIdRequired.code());
        let a = r.member_id;
        let ra = join(&mut g, &a, None, t0);
        let r = ra.recv().unwrap();
        assert_eq!(
            (r.error, r.generation, r.leader.as_str()),
            (0, 1, a.as_str())
        );
        assert_eq!(r.members.len(), 1);
        let (tx, rx) = flume::bounded(1);
        g.sync(
            &a,
            None,
            1,
            vec![(a.to_string(), Bytes::from_static(b"all"))],
            t0,
            tx,
        );
        assert_eq!(rx.recv().unwrap().assignment, Bytes::from_static(b"all"));
        assert_eq!(g.state, State::Stable);

        // B arrives: A must rejoin; A learns it by heartbeat.
        let b = join(&mut g, "", None, t0).recv().unwrap().member_id;
        let rb = join(&mut g, &b, None, t0);
        assert!(rb.try_recv().is_err(), "waits for A");
        assert_eq!(
            g.heartbeat(&a, None, 1, t0),
            ResponseError::RebalanceInProgress.code()
        );
        // A commits what it processed under generation 1 before rejoining.
        assert_eq!(g.check_commit(&a, None, 1), Ok(()));
        let ra = join(&mut g, &a, None, t0);
        let (ja, jb) = (ra.recv().unwrap(), rb.recv().unwrap());
        assert_eq!((ja.generation, jb.generation), (2, 2));
        // Generation 2 has no assignment until the leader's sync.
        assert_eq!(
            g.check_commit(&a, None, 2),
            Err(ResponseError::RebalanceInProgress.code())
        );
        assert_eq!(
            g.check_commit(&a, None, 1),
            Err(ResponseError::IllegalGeneration.code())
        );
        assert_eq!(ja.leader, a, "the leader stays the leader");
        assert_eq!((ja.members.len(), jb.members.len()), (2, 0));
        // Stale generation and unknown members are told so.
        assert_eq!(
            g.heartbeat(&a, None, 1, t0),
            ResponseError::IllegalGeneration.code()
        );
        assert_eq!(
            g.heartbeat("nobody", None, 2, t0),
            ResponseError::UnknownMemberId.code()
        );
        let (txb, rxb) = flume::bounded(1);
        g.sync(&b, None, 2, vec![], t0, txb);
        assert!(rxb.try_recv().is_err(), "a follower waits for the leader");
        let (txa, rxa) = flume::bounded(1);
        g.sync(
            &a,
            None,
            2,
            vec![
                (a.to_string(), Bytes::from_static(b"p0")),
                (b.to_string(), Bytes::from_static(b"p1")),
            ],
            t0,
            txa,
        );
        assert_eq!(rxa.recv().unwrap().assignment, Bytes::from_static(b"p0"));
        assert_eq!(rxb.recv().unwrap().assignment, Bytes::from_static(b"p1"));
        assert_eq!(g.check_commit(&b, None, 2), Ok(()));

        // B goes silent past its session timeout: expelled, rebalance.
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(g.heartbeat(&a, None, 2, t1), 0);
        assert!(g.tick(t0 + Duration::from_secs(11)));
        assert!(g.member(&b).is_none());
        assert_eq!(g.state, State::PreparingRebalance);
        let r = join(&mut g, &a, None, t1).recv().unwrap();
        assert_eq!((r.generation, r.members.len()), (3, 1));
    }

    /// A tick passes over a group until its earliest deadline, which a
    /// heartbeat only moves later; a change makes it look again.
    #[test]
    fn ticks_wait_for_the_earliest_deadline() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut g = Group::new("g");
        let a = join(&mut g, "", None, t0).recv().unwrap().member_id;
        join(&mut g, &a, None, t0).recv().unwrap();
        let (tx, rx) = flume::bounded(1);
        g.sync(&a, None, 1, vec![(a.to_string(), Bytes::new())], t0, tx);
        rx.recv().unwrap();
        assert!(!g.tick(s(1)));
        assert_eq!(g.next_tick, Some(s(10)), "A's session (10 s) ends first");
        // A heartbeat keeps A: the tick at the old deadline looks, finds
        // A alive, and waits for the new one.
        assert_eq!(g.heartbeat(&a, None, 1, s(8)), 0);
        assert!(!g.tick(s(10)));
        assert!(g.member(&a).is_some());
        assert_eq!(g.next_tick, Some(s(18)));
        // A newcomer's id expires sooner than that: the join clears the
        // wait, and the next tick sees the pending id's deadline.
        let b = join(&mut g, "", None, s(9)).recv().unwrap();
        assert_eq!(b.error, ResponseError::MemberIdRequired.code());
        assert_eq!(g.next_tick, None);
        assert!(!g.tick(s(11)));
        assert_eq!(
            g.next_tick,
            Some(s(18)),
            "A's session ends at 18, B's id at 19"
        );
        // Before then a tick does no work at all (shown by shortening A's
        // session behind the group's back, which nothing else does).
        g.members.values_mut().next().unwrap().session_timeout = Duration::from_secs(1);
        assert!(!g.tick(s(12)));
        assert!(g.member(&a).is_some());
        // Silent past its session, A goes.
        assert!(g.tick(s(19)));
        assert!(g.member(&a).is_none());
    }

    /// A member that does not rejoin within the rebalance timeout is
    /// dropped and the rebalance completes without it; leaving starts a
    /// rebalance; the last member leaving empties the group.
    #[test]
    fn rebalance_timeout_and_leave() {
        let t0 = Instant::now();
        let mut g = Group::new("g");
        let a = join(&mut g, "", None, t0).recv().unwrap().member_id;
        join(&mut g, &a, None, t0).recv().unwrap();
        let b = join(&mut g, "", None, t0).recv().unwrap().member_id;
        let rb = join(&mut g, &b, None, t0);
        assert!(!g.tick(t0 + Duration::from_secs(29)));
        assert!(g.tick(t0 + Duration::from_secs(31)));
        let r = rb.recv().unwrap();
        assert_eq!(
            (r.generation, r.leader.as_str(), r.members.len()),
            (2, b.as_str(), 1)
        );
        assert_eq!(
            g.leave(&[(b.to_string(), None), ("x".into(), None)], t0),
            vec![0, ResponseError::UnknownMemberId.code()]
        );
        assert_eq!(g.state, State::Empty);
    }

    /// A static member rejoining a stable group takes its old place with a
    /// new id and no rebalance; the old id is fenced.
    #[test]
    fn static_member_rejoins_without_rebalance() {
        let t0 = Instant::now();
        let mut g = Group::new("g");
        let a = join(&mut g, "", Some("i-a"), t0).recv().unwrap();
        assert_eq!(a.error, 0, "static members need no id round trip");
        let b = join(&mut g, "", Some("i-b"), t0);
        assert!(b.try_recv().is_err());
        assert_eq!(
            g.heartbeat(&a.member_id, Some("i-a"), 1, t0),
            ResponseError::RebalanceInProgress.code()
        );
        let ra = join(&mut g, &a.member_id, Some("i-a"), t0);
        let (ja, jb) = (ra.recv().unwrap(), b.recv().unwrap());
        assert_eq!(ja.generation, 2);
        let (tx, rx) = flume::bounded(1);
        g.sync(
            &ja.member_id,
            Some("i-a"),
            2,
            vec![
                (ja.member_id.to_string(), Bytes::from_static(b"x")),
                (jb.member_id.to_string(), Bytes::from_static(b"y")),
            ],
            t0,
            tx,
        );
        rx.recv().unwrap();
        // b restarts with the same instance id.
        let again = join(&mut g, "", Some("i-b"), t0).recv().unwrap();
        assert_eq!((again.error, again.generation), (0, 2), "no rebalance");
        assert_ne!(again.member_id, jb.member_id);
        assert_eq!(g.state, State::Stable);
        assert_eq!(
            g.heartbeat(&jb.member_id, Some("i-b"), 2, t0),
            ResponseError::FencedInstanceId.code()
        );
        let (tx, rx) = flume::bounded(1);
        g.sync(&again.member_id, Some("i-b"), 2, vec![], t0, tx);
        assert_eq!(rx.recv().unwrap().assignment, Bytes::from_static(b"y"));
    }

    /// Members that got their ids together land in one generation: a
    /// rebalance waits for every id handed out; one that never comes back
    /// is dropped at its session timeout and the rest complete.
    #[test]
    fn a_rebalance_waits_for_members_given_ids() {
        let t0 = Instant::now();
        let mut g = Group::new("g");
        let a = join(&mut g, "", None, t0).recv().unwrap().member_id;
        let b = join(&mut g, "", None, t0).recv().unwrap().member_id;
        let c = join(&mut g, "", None, t0).recv().unwrap().member_id;
        let ra = join(&mut g, &a, None, t0);
        assert!(ra.try_recv().is_err(), "waits for b and c");
        let rb = join(&mut g, &b, None, t0);
        assert!(rb.try_recv().is_err(), "waits for c");
        // c never returns: after its session timeout the two complete.
        assert!(!g.tick(t0 + Duration::from_secs(5)));
        assert!(g.tick(t0 + Duration::from_secs(11)));
        let (ja, jb) = (ra.recv().unwrap(), rb.recv().unwrap());
        assert_eq!((ja.generation, jb.generation), (1, 1));
        assert_eq!(ja.members.len() + jb.members.len(), 2);
        let r = join(&mut g, &c, None, t0).recv().unwrap();
        assert_eq!(
            r.error,
            ResponseError::UnknownMemberId.code(),
            "its id expired"
        );
    }
}

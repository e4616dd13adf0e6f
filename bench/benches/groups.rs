//! Group coordinator benchmark, against `sluice serve --cores 1`:
//!
//! - rebalance: 8 members (threads, one connection each) first get their
//!   member ids (JoinGroup answered with MEMBER_ID_REQUIRED; untimed, and
//!   the coordinator then waits for all eight), then, released together,
//!   join with their ids; the leader assigns round-robin; all sync. Timed
//!   from the release to the last member holding its assignment. The
//!   clients' own minimum is measured in the same round on the same
//!   connections: the session's two rounds in the protocol's order (every
//!   member's join round trip, then, once all are answered, every
//!   member's sync round trip) as ApiVersions requests the broker answers
//!   at once. Ratio = rebalance / minimum. Also reported: the ratio to
//!   each member's two round trips run independently of the others, and
//!   the ratio to the same JoinGroup/SyncGroup exchange, by the same
//!   clients, against a coordinator that takes no time (a `poll` loop on
//!   the broker's CPU that only holds and releases the answers as the
//!   protocol orders them): what sluice's coordinator adds to the
//!   exchange itself.
//! - offset commits: one connection, then four at once, each keeping 128
//!   OffsetCommit requests (one partition each, outside group management)
//!   in flight; commits per second, each answered only once durable.
//!
//! `cargo build --release -p sluice-broker && cargo bench -p sluice-bench
//! --bench groups`. SLUICE_BENCH_REBALANCES (default 201),
//! SLUICE_BENCH_REPEATS (commit runs, default 5), SLUICE_BENCH_COMMITS
//! (default 200000). Figures are medians. Writes
//! `target/bench/groups.json`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use sluice_bench::{
    broker_bin, create_topic, frame, free_port, median, pin_this_thread, pipeline, serve,
};
use sluice_net::client::Client;

const MEMBERS: usize = 8;
const PARTITIONS: i32 = 64;
const TOPIC: &str = "bench-groups";

fn subscription() -> Bytes {
    let mut m = Vec::new();
    m.extend_from_slice(&0i16.to_be_bytes());
    m.extend_from_slice(&1i32.to_be_bytes());
    m.extend_from_slice(&(TOPIC.len() as i16).to_be_bytes());
    m.extend_from_slice(TOPIC.as_bytes());
    m.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(m)
}

fn assignment(parts: &[i32]) -> Bytes {
    let mut a = Vec::new();
    a.extend_from_slice(&0i16.to_be_bytes());
    a.extend_from_slice(&1i32.to_be_bytes());
    a.extend_from_slice(&(TOPIC.len() as i16).to_be_bytes());
    a.extend_from_slice(TOPIC.as_bytes());
    a.extend_from_slice(&(parts.len() as i32).to_be_bytes());
    for p in parts {
        a.extend_from_slice(&p.to_be_bytes());
    }
    a.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(a)
}

fn join(c: &mut Client, group: &str, id: &str) -> JoinGroupResponse {
    c.call_at(
        ApiKey::JoinGroup,
        7,
        &JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_session_timeout_ms(30_000)
            .with_rebalance_timeout_ms(30_000)
            .with_member_id(StrBytes::from_string(id.to_string()))
            .with_group_instance_id(None)
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
            )
            .with_name(StrBytes::from_static_str("roundrobin"))
            .with_metadata(subscription())]),
    )
    .unwrap()
}

/// A member id for `group` (JoinGroup without one is answered with
/// MEMBER_ID_REQUIRED and a fresh id).
fn member_id(c: &mut Client, group: &str) -> String {
    let r = join(c, group, "");
    assert_eq!(r.error_code, 79, "{r:?}");
    r.member_id.to_string()
}

/// When one member sent and got each of its two requests, and whether
/// it led.
struct Stamps {
    leader: bool,
    join_sent: Instant,
    joined: Instant,
    sync_sent: Instant,
    synced: Instant,
}

/// The phases of one rebalance, in µs from the first JoinGroup sent:
/// the last JoinGroup sent, the first and last join answers, the
/// leader's join answer and its SyncGroup, the last SyncGroup sent, and
/// the first and last assignments received.
const PHASES: [&str; 8] = [
    "last join sent",
    "first join answer",
    "last join answer",
    "leader's join answer",
    "leader's sync sent",
    "last sync sent",
    "first assignment",
    "last assignment",
];

fn phases(members: &[Stamps]) -> [f64; 8] {
    let t0 = members.iter().map(|m| m.join_sent).min().unwrap();
    let us = |t: Instant| (t - t0).as_secs_f64() * 1e6;
    let first = |f: fn(&Stamps) -> Instant| us(members.iter().map(f).min().unwrap());
    let last = |f: fn(&Stamps) -> Instant| us(members.iter().map(f).max().unwrap());
    let leader = members.iter().find(|m| m.leader).expect("a leader");
    [
        last(|m| m.join_sent),
        first(|m| m.joined),
        last(|m| m.joined),
        us(leader.joined),
        us(leader.sync_sent),
        last(|m| m.sync_sent),
        first(|m| m.synced),
        last(|m| m.synced),
    ]
}

/// One member's rebalance: join with its id, then sync. Returns how many
/// partitions it was given, and when each step happened.
fn member(c: &mut Client, group: &str, id: &str) -> (usize, Stamps) {
    let join_sent = Instant::now();
    let joined = join(c, group, id);
    let joined_at = Instant::now();
    assert_eq!(joined.error_code, 0, "{joined:?}");
    let assignments = if joined.leader == joined.member_id {
        assert_eq!(
            joined.members.len(),
            MEMBERS,
            "every member in one generation"
        );
        joined
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let parts: Vec<i32> = (0..PARTITIONS)
                    .filter(|p| *p as usize % MEMBERS == i)
                    .collect();
                sync_group_request::SyncGroupRequestAssignment::default()
                    .with_member_id(m.member_id.clone())
                    .with_assignment(assignment(&parts))
            })
            .collect()
    } else {
        Vec::new()
    };
    let sync_sent = Instant::now();
    let synced: SyncGroupResponse = c
        .call_at(
            ApiKey::SyncGroup,
            5,
            &SyncGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
                .with_generation_id(joined.generation_id)
                .with_member_id(joined.member_id.clone())
                .with_group_instance_id(None)
                .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
                .with_protocol_name(Some(StrBytes::from_static_str("roundrobin")))
                .with_assignments(assignments),
        )
        .unwrap();
    assert_eq!(synced.error_code, 0);
    let stamps = Stamps {
        leader: joined.leader == joined.member_id,
        join_sent,
        joined: joined_at,
        sync_sent,
        synced: Instant::now(),
    };
    (synced.assignment.len(), stamps)
}

/// A coordinator that takes no time, for the clients' own minimum of the
/// exchange: one thread on the broker's CPU, a `poll` loop over the
/// members' connections, that holds every JoinGroup until all `MEMBERS`
/// have arrived and answers them in arrival order (the first is the
/// leader and gets the member list, as in sluice), then holds the
/// followers' SyncGroups until the leader's arrives and answers each
/// with its assignment. No group state, no log, no checks: what is left
/// is the same clients doing the same two rounds, including the burst of
/// answers at the end of each round and the leader's own work. Serves
/// until the listener's owner drops `stop`.
fn null_coordinator(listener: std::net::TcpListener, stop: Arc<std::sync::atomic::AtomicBool>) {
    use bytes::BytesMut;
    use kafka_protocol::protocol::Encodable;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::sync::atomic::Ordering;

    pin_this_thread(0);
    listener.set_nonblocking(true).unwrap();
    // Each member's connection and unread bytes; None once it closed.
    let mut conns: Vec<Option<(std::net::TcpStream, Vec<u8>)>> = Vec::new();
    // (connection, correlation id, member id, metadata) in arrival order.
    let mut joins: Vec<(usize, i32, StrBytes, Bytes)> = Vec::new();
    // Followers' syncs waiting for the leader: (connection, correlation id, member id).
    let mut syncs: Vec<(usize, i32, StrBytes)> = Vec::new();
    let mut assignments: Option<Vec<sync_group_request::SyncGroupRequestAssignment>> = None;
    let mut answered = 0;
    let answer = |c: &mut std::net::TcpStream,
                  api: ApiKey,
                  version: i16,
                  id: i32,
                  body: &dyn Fn(&mut BytesMut)| {
        let mut out = BytesMut::new();
        out.extend_from_slice(&[0; 4]);
        ResponseHeader::default()
            .with_correlation_id(id)
            .encode(&mut out, api.response_header_version(version))
            .unwrap();
        body(&mut out);
        let len = (out.len() - 4) as i32;
        out[..4].copy_from_slice(&len.to_be_bytes());
        c.write_all(&out).unwrap();
    };
    let sync_answer = |c: &mut std::net::TcpStream, id: i32, a: Bytes| {
        answer(c, ApiKey::SyncGroup, 5, id, &|out| {
            SyncGroupResponse::default()
                .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
                .with_protocol_name(Some(StrBytes::from_static_str("roundrobin")))
                .with_assignment(a.clone())
                .encode(out, 5)
                .unwrap()
        });
    };
    let mut fds: Vec<libc::pollfd> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        fds.clear();
        fds.push(libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        let open: Vec<usize> = (0..conns.len()).filter(|&i| conns[i].is_some()).collect();
        for &i in &open {
            let fd = conns[i].as_ref().unwrap().0.as_raw_fd();
            fds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: fds is a live array of fds.len() pollfd entries.
        if unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) } <= 0 {
            continue;
        }
        if fds[0].revents != 0 {
            while let Ok((c, _)) = listener.accept() {
                c.set_nonblocking(false).unwrap();
                c.set_nodelay(true).unwrap();
                conns.push(Some((c, Vec::new())));
            }
        }
        let ready: Vec<usize> = (1..fds.len())
            .filter(|&k| fds[k].revents != 0)
            .map(|k| open[k - 1])
            .collect();
        for i in ready {
            let mut chunk = [0u8; 4096];
            let (c, buf) = conns[i].as_mut().unwrap();
            let n = c.read(&mut chunk).unwrap_or(0);
            if n == 0 {
                conns[i] = None; // the member is done with this round
                continue;
            }
            buf.extend_from_slice(&chunk[..n]);
            loop {
                let buf = &mut conns[i].as_mut().unwrap().1;
                if buf.len() < 4 {
                    break;
                }
                let len = i32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
                if buf.len() < 4 + len {
                    break;
                }
                let mut f = Bytes::copy_from_slice(&buf[4..4 + len]);
                buf.drain(..4 + len);
                let api = ApiKey::try_from(i16::from_be_bytes([f[0], f[1]])).unwrap();
                let version = i16::from_be_bytes([f[2], f[3]]);
                let h = RequestHeader::decode(&mut f, api.request_header_version(version)).unwrap();
                match api {
                    ApiKey::JoinGroup => {
                        let r = JoinGroupRequest::decode(&mut f, version).unwrap();
                        let meta = r.protocols[0].metadata.clone();
                        joins.push((i, h.correlation_id, r.member_id, meta));
                        if joins.len() < MEMBERS {
                            continue;
                        }
                        let leader = joins[0].2.clone();
                        let members: Vec<_> = joins
                            .iter()
                            .map(|(_, _, m, meta)| {
                                join_group_response::JoinGroupResponseMember::default()
                                    .with_member_id(m.clone())
                                    .with_metadata(meta.clone())
                            })
                            .collect();
                        for (k, (c, id, m, _)) in joins.drain(..).enumerate() {
                            let r = JoinGroupResponse::default()
                                .with_generation_id(1)
                                .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
                                .with_protocol_name(Some(StrBytes::from_static_str("roundrobin")))
                                .with_leader(leader.clone())
                                .with_member_id(m)
                                .with_members(if k == 0 { members.clone() } else { Vec::new() });
                            answer(
                                &mut conns[c].as_mut().unwrap().0,
                                ApiKey::JoinGroup,
                                version,
                                id,
                                &|out| r.encode(out, version).unwrap(),
                            );
                        }
                    }
                    ApiKey::SyncGroup => {
                        let r = SyncGroupRequest::decode(&mut f, version).unwrap();
                        syncs.push((i, h.correlation_id, r.member_id));
                        if !r.assignments.is_empty() {
                            assignments = Some(r.assignments);
                        }
                        // Followers wait for the leader's assignments.
                        let Some(all) = assignments.as_ref() else {
                            continue;
                        };
                        for (c, id, m) in syncs.drain(..) {
                            let a = all
                                .iter()
                                .find(|a| a.member_id == m)
                                .map(|a| a.assignment.clone())
                                .unwrap_or_default();
                            sync_answer(&mut conns[c].as_mut().unwrap().0, id, a);
                            answered += 1;
                        }
                        if answered == MEMBERS {
                            (answered, assignments) = (0, None);
                        }
                    }
                    // The client's handshake on connect.
                    ApiKey::ApiVersions => {
                        let c = &mut conns[i].as_mut().unwrap().0;
                        answer(c, api, version, h.correlation_id, &|out| {
                            ApiVersionsResponse::default().encode(out, version).unwrap()
                        });
                    }
                    other => panic!("null coordinator: unexpected {other:?}"),
                }
            }
        }
        if conns.iter().all(Option::is_none) {
            conns.clear();
        }
    }
}

/// One round's figures, in seconds, and the phases of both exchanges.
struct Round {
    rebalance: f64,
    minimum: f64,
    independent: f64,
    null: f64,
    phases: [f64; 8],
    null_phases: [f64; 8],
}

/// One round: the rebalance, the minimum, independent round trips, and
/// the exchange against the coordinator that takes no time.
///
/// The minimum is the session's two rounds as the protocol orders them:
/// every member's join round trip, and only once all have been answered
/// (a rebalance cannot answer any join before the last member joined),
/// every member's sync round trip; both as ApiVersions requests, which
/// the broker answers at once. The independent figure drops that order:
/// each member's two round trips back to back, overlapping the others'.
fn rebalance_round(port: u16, null_port: u16, round: usize) -> Round {
    let addr = format!("127.0.0.1:{port}");
    let null_addr = format!("127.0.0.1:{null_port}");
    let barrier = Arc::new(Barrier::new(MEMBERS + 1));
    let threads: Vec<_> = (0..MEMBERS)
        .map(|_| {
            let (addr, null_addr, barrier) = (addr.clone(), null_addr.clone(), barrier.clone());
            std::thread::spawn(move || {
                pin_this_thread(1);
                let mut c = Client::connect(&addr, Duration::from_secs(10)).unwrap();
                let mut null = Client::connect(&null_addr, Duration::from_secs(10)).unwrap();
                let group = format!("bench-{round}");
                let id = member_id(&mut c, &group);
                let mut round_trip = || {
                    let _: ApiVersionsResponse = c
                        .call_at(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
                        .unwrap();
                };
                // The minimum: joins, then syncs.
                barrier.wait();
                round_trip();
                barrier.wait();
                round_trip();
                barrier.wait();
                // Independent round trips.
                round_trip();
                round_trip();
                barrier.wait();
                // The same exchange against the coordinator that takes no time.
                barrier.wait();
                let (n, null_stamps) = member(&mut null, &group, &id);
                assert!(n > 0, "every member gets partitions");
                barrier.wait();
                // The rebalance.
                barrier.wait();
                let (n, stamps) = member(&mut c, &group, &id);
                assert!(n > 0, "every member gets partitions");
                barrier.wait();
                (stamps, null_stamps)
            })
        })
        .collect();
    barrier.wait();
    let t = Instant::now();
    barrier.wait();
    barrier.wait();
    let minimum = t.elapsed().as_secs_f64();
    let t = Instant::now();
    barrier.wait();
    let independent = t.elapsed().as_secs_f64();
    barrier.wait();
    let t = Instant::now();
    barrier.wait();
    let null = t.elapsed().as_secs_f64();
    barrier.wait();
    let t = Instant::now();
    barrier.wait();
    let rebalance = t.elapsed().as_secs_f64();
    let (stamps, null_stamps): (Vec<Stamps>, Vec<Stamps>) =
        threads.into_iter().map(|t| t.join().unwrap()).unzip();
    Round {
        rebalance,
        minimum,
        independent,
        null,
        phases: phases(&stamps),
        null_phases: phases(&null_stamps),
    }
}

/// Offset commits per second with `window` in flight on one connection.
fn commits(port: u16, count: usize, window: usize) -> f64 {
    pin_this_thread(1);
    let frames: Vec<Vec<u8>> = (0..PARTITIONS)
        .map(|p| {
            frame(
                ApiKey::OffsetCommit,
                8,
                0,
                &OffsetCommitRequest::default()
                    .with_group_id(GroupId(StrBytes::from_static_str("bench-commits")))
                    .with_generation_id_or_member_epoch(-1)
                    .with_group_instance_id(None)
                    .with_topics(vec![
                        offset_commit_request::OffsetCommitRequestTopic::default()
                            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                            .with_partitions(vec![
                                offset_commit_request::OffsetCommitRequestPartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(42),
                            ]),
                    ]),
            )
        })
        .collect();
    let hv = ApiKey::OffsetCommit.response_header_version(8);
    let took = pipeline(
        port,
        count,
        window,
        |i, out| {
            let mut f = frames[i % frames.len()].clone();
            f[8..12].copy_from_slice(&(i as i32).to_be_bytes());
            out.extend_from_slice(&f);
        },
        |i, mut f| {
            let h = ResponseHeader::decode(&mut f, hv).unwrap();
            assert_eq!(h.correlation_id, i as i32);
            let r = OffsetCommitResponse::decode(&mut f, 8).unwrap();
            assert_eq!(r.topics[0].partitions[0].error_code, 0);
        },
    );
    count as f64 / took.as_secs_f64()
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let repeats = env("SLUICE_BENCH_REPEATS", if quick { 1 } else { 5 });
    // One rebalance is a fraction of a millisecond on a noisy machine:
    // many of them, each against its own minimum.
    let rebalances = env("SLUICE_BENCH_REBALANCES", if quick { 1 } else { 201 });
    let count = env("SLUICE_BENCH_COMMITS", if quick { 2_000 } else { 200_000 });
    let dir = std::env::var("SLUICE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-groups"));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = broker_bin();
    let port = free_port();
    let _served = serve(&bin, &dir.join("broker"), port);
    // The timing thread waits with the clients, on their CPU: woken on the
    // broker's CPU, it would wait behind the polling shard to read the
    // clock.
    pin_this_thread(1);
    create_topic(port, TOPIC, PARTITIONS, &[]);
    let null_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let null_port = null_listener.local_addr().unwrap().port();
    let null_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let null_thread = {
        let stop = null_stop.clone();
        std::thread::spawn(move || null_coordinator(null_listener, stop))
    };
    let (mut reb, mut min, mut ratio, mut rates) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut indep, mut indep_ratio, mut rates4) = (Vec::new(), Vec::new(), Vec::new());
    let (mut null, mut null_ratio) = (Vec::new(), Vec::new());
    let (mut phase, mut null_phase) = (vec![Vec::new(); 8], vec![Vec::new(); 8]);
    for round in 0..rebalances {
        let Round {
            rebalance: r,
            minimum: m,
            independent: i,
            null: n,
            phases,
            null_phases,
        } = rebalance_round(port, null_port, round);
        for k in 0..8 {
            phase[k].push(phases[k]);
            null_phase[k].push(null_phases[k]);
        }
        null.push(n);
        null_ratio.push(r / n);
        reb.push(r);
        min.push(m);
        ratio.push(r / m);
        indep.push(i);
        indep_ratio.push(r / i);
    }
    for _ in 0..repeats {
        rates.push(commits(port, count, 128));
        // Several consumers' commits at once: 4 connections.
        let t = Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(move || commits(port, count / 4, 128)))
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        rates4.push((count / 4 * 4) as f64 / t.elapsed().as_secs_f64());
    }
    null_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    null_thread.join().unwrap();
    // The spread of the per-round ratios: quartiles.
    let quartiles = |v: &[f64]| -> String {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let q = |f: f64| v[((v.len() - 1) as f64 * f) as usize];
        format!("{:.2} / {:.2} / {:.2}", q(0.25), q(0.5), q(0.75))
    };
    let per_round = quartiles(&ratio);
    let null_per_round = quartiles(&null_ratio);
    let (null, null_ratio) = (median(null), median(null_ratio));
    let (reb, min, ratio, rate) = (median(reb), median(min), median(ratio), median(rates));
    let (rate4, indep, indep_ratio) = (median(rates4), median(indep), median(indep_ratio));
    println!(
        "groups benchmark: median of {rebalances} rebalances and {repeats} commit runs, broker {}",
        bin.display()
    );
    println!(
        "  rebalance, {MEMBERS} members, {PARTITIONS} partitions: {:.2} ms; the clients' minimum {:.2} ms; ratio {ratio:.2} (rounds' quartiles {per_round})",
        reb * 1e3,
        min * 1e3,
    );
    println!(
        "  (against independent round trips, {:.2} ms: ratio {indep_ratio:.2})",
        indep * 1e3
    );
    println!(
        "  (against the same exchange with a coordinator that takes no time, {:.2} ms: ratio {null_ratio:.2}, rounds' quartiles {null_per_round})",
        null * 1e3,
    );
    let medians = |p: Vec<Vec<f64>>| -> Vec<String> {
        p.into_iter().map(|v| format!("{:.0}", median(v))).collect()
    };
    println!(
        "  phases, µs from the first join sent ({}): sluice {}; no-time coordinator {}",
        PHASES.join(", "),
        medians(phase).join(" "),
        medians(null_phase).join(" ")
    );
    println!("  offset commits, one shard, 1 connection x 128 in flight: {rate:.0} per second");
    println!("  offset commits, one shard, 4 connections x 128 in flight: {rate4:.0} per second");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../bench");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(
        out.join(if quick { "groups-smoke.json" } else { "groups.json" }),
        format!(
            "{{\"repeats\":{repeats},\"rebalances\":{rebalances},\"rebalance_ms\":{:.3},\"minimum_ms\":{:.3},\"ratio\":{ratio:.3},\"independent_ms\":{:.3},\"independent_ratio\":{indep_ratio:.3},\"null_coordinator_ms\":{:.3},\"null_coordinator_ratio\":{null_ratio:.3},\"commits_per_sec\":{rate:.0},\"commits_per_sec_4_connections\":{rate4:.0}}}\n",
            reb * 1e3,
            min * 1e3,
            indep * 1e3,
            null * 1e3
        ),
    );
}

//! The whole-request fuzzer: seeded mutations of real-client requests of
//! every served API, sent to a running two-shard broker, each on a fresh
//! connection. After every round a check connects until both shards have
//! almost surely been reached (the kernel spreads connections over the
//! shards by a hash this test cannot see; twelve connections miss a shard
//! with odds of one in two thousand), and each connection is answered and
//! produces to and fetches from partitions on every shard; the process
//! must still run and its log must show no panic.
//!
//! The corpus: what librdkafka sends (captured through a recording proxy
//! the broker advertises: an admin client, an idempotent producer with
//! every codec, a consumer group member that commits), and requests
//! encoded here for every served API at every served version.
//!
//! `SLUICE_FUZZ_SEED` replays a run; `SLUICE_FUZZ_REQUESTS` (default
//! 5000) or `SLUICE_FUZZ_SECONDS` bound it. A failure prints the seed.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::wire::*;
use common::{free_port, tempdir, Broker, Rng};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// Client-to-broker frames seen by the recording proxy.
type Frames = Arc<Mutex<Vec<Vec<u8>>>>;

/// Listens on `port` and forwards each connection to the broker at
/// `broker`, recording every whole frame the client sends.
fn recording_proxy(port: u16, broker: u16, frames: Frames) {
    let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        for client in l.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect(("127.0.0.1", broker)) else {
                continue;
            };
            let (mut c_rd, mut s_wr) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut s_rd, mut c_wr) = (server, client);
            let frames = frames.clone();
            std::thread::spawn(move || {
                let mut pending = Vec::new();
                let mut buf = [0u8; 64 * 1024];
                while let Ok(n) = c_rd.read(&mut buf) {
                    if n == 0 || s_wr.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    pending.extend_from_slice(&buf[..n]);
                    while pending.len() >= 4 {
                        let len = u32::from_be_bytes(pending[..4].try_into().unwrap()) as usize;
                        if pending.len() < 4 + len {
                            break;
                        }
                        let frame: Vec<u8> = pending.drain(..4 + len).collect();
                        frames.lock().unwrap().push(frame);
                    }
                }
                let _ = s_wr.shutdown(Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s_rd, &mut c_wr);
                let _ = c_wr.shutdown(Shutdown::Write);
            });
        }
    });
}

/// Runs librdkafka clients through the proxy: topic creation, idempotent
/// produce in every codec, a group member that consumes and commits.
fn capture_real_clients(proxy: u16) {
    let bootstrap = format!("127.0.0.1:{proxy}");
    let admin: rdkafka::admin::AdminClient<_> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let topic =
        rdkafka::admin::NewTopic::new("fuzz-real", 2, rdkafka::admin::TopicReplication::Fixed(1));
    let opts = rdkafka::admin::AdminOptions::new();
    let r = futures_lite::future::block_on(admin.create_topics(&[topic], &opts)).unwrap();
    assert!(r[0].is_ok(), "{r:?}");
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let p: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("enable.idempotence", "true")
            .set("compression.codec", codec)
            .set("linger.ms", "5")
            .create()
            .unwrap();
        for i in 0..20 {
            let key = format!("k{i}");
            let value = format!("{codec} value {i} {}", "x".repeat(i * 10));
            p.send(BaseRecord::to("fuzz-real").key(&key).payload(&value))
                .unwrap();
        }
        p.flush(Duration::from_secs(30)).unwrap();
    }
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "fuzz-group")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    c.subscribe(&["fuzz-real"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = 0;
    while got < 100 && Instant::now() < deadline {
        if let Some(Ok(_)) = c.poll(Duration::from_millis(100)) {
            got += 1;
        }
    }
    assert_eq!(got, 100, "the group member read everything produced");
    c.commit_consumer_state(CommitMode::Sync).unwrap();
    let _ = c.fetch_metadata(None, Duration::from_secs(5));
    c.unsubscribe();
    drop(c);
}

/// A request frame for `api` at `version`, if the body encodes there.
fn frame<R: Encodable>(api: ApiKey, version: i16, body: &R) -> Option<Vec<u8>> {
    sluice_net::client::encode_request(api, version, 7, "fuzz", body)
        .ok()
        .map(|b| b.to_vec())
}

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

/// Requests for every served API at every served version, with bodies a
/// client would send.
fn encoded_corpus() -> Vec<Vec<u8>> {
    let records = sluice_storage::batch::build::uniform(3, 30, 1_700_000_000_000);
    let mut out = Vec::new();
    for &(api, min, max) in sluice_broker::apis::SUPPORTED {
        for v in min..=max {
            let f = match api {
                ApiKey::Produce => {
                    frame(api, v, &produce_request("fuzz-gen", 0, -1, records.clone()))
                }
                ApiKey::Fetch => frame(api, v, &fetch_request("fuzz-gen", 1, 0, 100, 1 << 20)),
                ApiKey::ListOffsets => frame(api, v, &list_offsets_request("fuzz-gen", 0, -1)),
                ApiKey::Metadata => frame(
                    api,
                    v,
                    &MetadataRequest::default()
                        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
                        )
                        .with_name(Some(name("fuzz-gen")))])),
                ),
                ApiKey::ApiVersions => frame(
                    api,
                    v,
                    &ApiVersionsRequest::default()
                        .with_client_software_name(s("fuzz"))
                        .with_client_software_version(s("1")),
                ),
                ApiKey::CreateTopics => frame(
                    api,
                    v,
                    &CreateTopicsRequest::default()
                        .with_topics(vec![create_topics_request::CreatableTopic::default()
                            .with_name(name("fuzz-made"))
                            .with_num_partitions(2)
                            .with_replication_factor(1)])
                        .with_timeout_ms(5000),
                ),
                ApiKey::DeleteTopics => frame(
                    api,
                    v,
                    &DeleteTopicsRequest::default()
                        .with_topic_names(vec![name("fuzz-made")])
                        .with_topics(vec![delete_topics_request::DeleteTopicState::default()
                            .with_name(Some(name("fuzz-made")))])
                        .with_timeout_ms(5000),
                ),
                ApiKey::CreatePartitions => frame(
                    api,
                    v,
                    &CreatePartitionsRequest::default()
                        .with_topics(vec![
                            create_partitions_request::CreatePartitionsTopic::default()
                                .with_name(name("fuzz-gen"))
                                .with_count(5),
                        ])
                        .with_timeout_ms(5000),
                ),
                ApiKey::DescribeConfigs => frame(
                    api,
                    v,
                    &DescribeConfigsRequest::default().with_resources(vec![
                        describe_configs_request::DescribeConfigsResource::default()
                            .with_resource_type(2)
                            .with_resource_name(s("fuzz-gen")),
                    ]),
                ),
                ApiKey::AlterConfigs => frame(
                    api,
                    v,
                    &AlterConfigsRequest::default().with_resources(vec![
                        alter_configs_request::AlterConfigsResource::default()
                            .with_resource_type(2)
                            .with_resource_name(s("fuzz-gen"))
                            .with_configs(vec![alter_configs_request::AlterableConfig::default()
                                .with_name(s("retention.ms"))
                                .with_value(Some(s("86400000")))]),
                    ]),
                ),
                ApiKey::IncrementalAlterConfigs => frame(
                    api,
                    v,
                    &IncrementalAlterConfigsRequest::default().with_resources(vec![
                        incremental_alter_configs_request::AlterConfigsResource::default()
                            .with_resource_type(2)
                            .with_resource_name(s("fuzz-gen"))
                            .with_configs(vec![
                                incremental_alter_configs_request::AlterableConfig::default()
                                    .with_name(s("segment.bytes"))
                                    .with_config_operation(0)
                                    .with_value(Some(s("2097152"))),
                            ]),
                    ]),
                ),
                ApiKey::InitProducerId => frame(
                    api,
                    v,
                    &InitProducerIdRequest::default()
                        .with_transactional_id(None)
                        .with_transaction_timeout_ms(60_000)
                        .with_producer_id(ProducerId(-1))
                        .with_producer_epoch(-1),
                ),
                ApiKey::FindCoordinator => frame(
                    api,
                    v,
                    &FindCoordinatorRequest::default()
                        .with_key(s("fuzz-gen-group"))
                        .with_coordinator_keys(vec![s("fuzz-gen-group")]),
                ),
                ApiKey::JoinGroup => frame(
                    api,
                    v,
                    &JoinGroupRequest::default()
                        .with_group_id(GroupId(s("fuzz-gen-group")))
                        .with_session_timeout_ms(6000)
                        .with_rebalance_timeout_ms(6000)
                        .with_protocol_type(s("consumer"))
                        .with_protocols(vec![
                            join_group_request::JoinGroupRequestProtocol::default()
                                .with_name(s("range"))
                                .with_metadata(bytes::Bytes::from_static(
                                    b"\0\0\0\0\0\x01\0\x08fuzz-gen\0\0\0\0",
                                )),
                        ]),
                ),
                ApiKey::SyncGroup => frame(
                    api,
                    v,
                    &SyncGroupRequest::default()
                        .with_group_id(GroupId(s("fuzz-gen-group")))
                        .with_generation_id(1)
                        .with_member_id(s("m"))
                        .with_protocol_type(Some(s("consumer")))
                        .with_protocol_name(Some(s("range"))),
                ),
                ApiKey::Heartbeat => frame(
                    api,
                    v,
                    &HeartbeatRequest::default()
                        .with_group_id(GroupId(s("fuzz-gen-group")))
                        .with_generation_id(1)
                        .with_member_id(s("m")),
                ),
                ApiKey::LeaveGroup => frame(
                    api,
                    v,
                    &LeaveGroupRequest::default()
                        .with_group_id(GroupId(s("fuzz-gen-group")))
                        .with_member_id(s("m"))
                        .with_members(vec![
                            leave_group_request::MemberIdentity::default().with_member_id(s("m"))
                        ]),
                ),
                ApiKey::OffsetCommit => frame(
                    api,
                    v,
                    &OffsetCommitRequest::default()
                        .with_group_id(GroupId(s("fuzz-gen-group")))
                        .with_generation_id_or_member_epoch(-1)
                        .with_topics(vec![
                            offset_commit_request::OffsetCommitRequestTopic::default()
                                .with_name(name("fuzz-gen"))
                                .with_partitions(vec![
                                    offset_commit_request::OffsetCommitRequestPartition::default()
                                        .with_partition_index(0)
                                        .with_committed_offset(1)
                                        .with_committed_metadata(Some(s("meta"))),
                                ]),
                        ]),
                ),
                ApiKey::OffsetFetch => frame(
                    api,
                    v,
                    &OffsetFetchRequest::default()
                        .with_group_id(GroupId(s("fuzz-gen-group")))
                        .with_topics(Some(vec![
                            offset_fetch_request::OffsetFetchRequestTopic::default()
                                .with_name(name("fuzz-gen"))
                                .with_partition_indexes(vec![0, 1]),
                        ]))
                        .with_groups(vec![
                            offset_fetch_request::OffsetFetchRequestGroup::default()
                                .with_group_id(GroupId(s("fuzz-gen-group"))),
                        ]),
                ),
                ApiKey::DescribeGroups => frame(
                    api,
                    v,
                    &DescribeGroupsRequest::default()
                        .with_groups(vec![GroupId(s("fuzz-gen-group"))]),
                ),
                ApiKey::ListGroups => frame(api, v, &ListGroupsRequest::default()),
                ApiKey::DeleteGroups => frame(
                    api,
                    v,
                    &DeleteGroupsRequest::default()
                        .with_groups_names(vec![GroupId(s("fuzz-gone"))]),
                ),
                ApiKey::OffsetDelete => frame(
                    api,
                    v,
                    &OffsetDeleteRequest::default()
                        .with_group_id(GroupId(s("fuzz-gen-group")))
                        .with_topics(vec![
                            offset_delete_request::OffsetDeleteRequestTopic::default()
                                .with_name(name("fuzz-gen"))
                                .with_partitions(vec![
                                    offset_delete_request::OffsetDeleteRequestPartition::default()
                                        .with_partition_index(0),
                                ]),
                        ]),
                ),
                _ => None,
            };
            if let Some(f) = f {
                out.push(f);
            }
        }
    }
    out
}

/// Rewrites the length prefix to match the body.
fn fix_len(f: &mut [u8]) {
    let len = (f.len() - 4) as u32;
    f[..4].copy_from_slice(&len.to_be_bytes());
}

/// One mutated frame (or a few bytes that are not one) made from the
/// corpus.
fn mutate(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut f = corpus[rng.below(corpus.len())].clone();
    let rounds = 1 + rng.below(3);
    for _ in 0..rounds {
        let body = f.len().saturating_sub(4).max(1);
        match rng.below(12) {
            // Bit flips.
            0 => {
                for _ in 0..1 + rng.below(8) {
                    let i = 4 + rng.below(body);
                    if i < f.len() {
                        f[i] ^= 1 << rng.below(8);
                    }
                }
            }
            // A byte set to an edge value.
            1 => {
                let i = 4 + rng.below(body);
                if i < f.len() {
                    f[i] = [0x00, 0xff, 0x7f, 0x80, 0x01][rng.below(5)];
                }
            }
            // A huge or negative count or length at some offset.
            2 => {
                let i = 4 + rng.below(body);
                let v: i32 = [i32::MAX, -1, -2, 0x7fff_0000, 0x0100_0000, i32::MIN][rng.below(6)];
                if i + 4 <= f.len() {
                    f[i..i + 4].copy_from_slice(&v.to_be_bytes());
                } else if i + 2 <= f.len() {
                    f[i..i + 2].copy_from_slice(&(v as i16).to_be_bytes());
                }
            }
            // Truncated, with the prefix telling the truth.
            3 => {
                let keep = 4 + rng.below(body);
                f.truncate(keep);
                fix_len(&mut f);
            }
            // Truncated, the prefix still claiming the whole frame.
            4 => {
                let keep = 4 + rng.below(body);
                f.truncate(keep);
            }
            // A prefix claiming more (or far more) than follows.
            5 => {
                let claim = match rng.below(3) {
                    0 => f.len() as u32 + rng.below(100) as u32,
                    1 => 100 * 1024 * 1024,
                    _ => u32::MAX - rng.below(10) as u32,
                };
                f[..4].copy_from_slice(&claim.to_be_bytes());
            }
            // Another version, served or not.
            6 if f.len() >= 8 => {
                let v = rng.below(20) as i16 - 2;
                f[6..8].copy_from_slice(&v.to_be_bytes());
            }
            // Another API's key on this body.
            7 if f.len() >= 6 => {
                let apis = sluice_broker::apis::SUPPORTED;
                let k = apis[rng.below(apis.len())].0 as i16;
                let k = if rng.below(8) == 0 {
                    rng.below(100) as i16
                } else {
                    k
                };
                f[4..6].copy_from_slice(&k.to_be_bytes());
            }
            // Spliced: this frame's head and another's tail.
            8 => {
                let other = &corpus[rng.below(corpus.len())];
                let head = 4 + rng.below(body);
                let tail = rng.below(other.len().saturating_sub(4).max(1));
                f.truncate(head.min(f.len()));
                f.extend_from_slice(&other[(other.len() - tail).max(4)..]);
                fix_len(&mut f);
            }
            // Garbage appended inside the frame.
            9 => {
                for _ in 0..1 + rng.below(64) {
                    f.push(rng.next() as u8);
                }
                fix_len(&mut f);
            }
            // Followed by a second, unmutated request.
            10 => {
                let other = corpus[rng.below(corpus.len())].clone();
                f.extend_from_slice(&other);
            }
            // Sent as it was.
            _ => {}
        }
    }
    f
}

/// Sends `bytes` on a fresh connection and reads what comes back for a
/// moment.
fn send_one(port: u16, bytes: &[u8]) {
    let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = c.set_write_timeout(Some(Duration::from_secs(2)));
    if c.write_all(bytes).is_err() {
        return;
    }
    let _ = c.shutdown(Shutdown::Write);
    let _ = c.set_read_timeout(Some(Duration::from_millis(100)));
    let mut sink = [0u8; 16 * 1024];
    while let Ok(n) = c.read(&mut sink) {
        if n == 0 {
            break;
        }
    }
}

/// A normal client on fresh connections, reaching both shards' network
/// loops, answered and producing to and fetching from every partition.
fn every_shard_serves(port: u16) {
    for _ in 0..12 {
        let mut w = Wire::connect(port);
        w.s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let md: MetadataResponse = w.call(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(None),
        );
        assert!(!md.brokers.is_empty());
    }
    let mut w = Wire::connect(port);
    w.s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for p in 0..4 {
        let batch = sluice_storage::batch::build::uniform(1, 10, 1_700_000_000_000);
        let (err, base) = produce(&mut w, "fuzz-check", p, batch);
        assert_eq!(err, 0, "produce to fuzz-check/{p}");
        let r: FetchResponse = w.call(
            ApiKey::Fetch,
            12,
            &fetch_request("fuzz-check", p, base, 100, 1 << 20),
        );
        assert_eq!(r.responses[0].partitions[0].error_code, 0);
    }
}

/// Each thread of `pid`: its name, scheduler state and CPU ticks spent in
/// one second (a shard spinning shows about 100).
fn threads_of(pid: u32) -> String {
    let sample = || -> Vec<(String, String, u64)> {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return Vec::new();
        };
        dir.filter_map(|e| {
            let stat = std::fs::read_to_string(e.ok()?.path().join("stat")).ok()?;
            let (name, rest) = stat.split_once(") ")?;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            Some((name.split_once('(')?.1.to_string(), f[0].to_string(), ticks))
        })
        .collect()
    };
    let a = sample();
    std::thread::sleep(Duration::from_secs(1));
    let b = sample();
    b.iter()
        .map(|(n, s, t)| {
            let before = a.iter().find(|x| &x.0 == n).map_or(0, |x| x.2);
            format!("{n} {s} {}\n", t.saturating_sub(before))
        })
        .collect()
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn mutated_client_requests_never_stop_a_shard() {
    let seed = env_u64("SLUICE_FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let seconds = env_u64("SLUICE_FUZZ_SECONDS");
    let requests =
        env_u64("SLUICE_FUZZ_REQUESTS").unwrap_or(if seconds.is_some() { u64::MAX } else { 5000 });
    println!("fuzz seed {seed} (replay with SLUICE_FUZZ_SEED={seed})");

    let data = tempdir();
    let port = free_port();
    let proxy = free_port();
    let advertised = format!("127.0.0.1:{proxy}");
    let mut b = Broker::spawn_env(
        data.path(),
        2,
        port,
        &["--advertised-listener", &advertised],
        &[("SLUICE_LOG", "warn")],
    );
    assert!(b.wait_for("sluice: serving"), "{:#?}", b.seen);
    let frames: Frames = Arc::default();
    recording_proxy(proxy, port, frames.clone());
    capture_real_clients(proxy);
    let mut corpus = frames.lock().unwrap().clone();
    let real = corpus.len();
    let mut seen_apis: Vec<i16> = corpus
        .iter()
        .map(|f| i16::from_be_bytes([f[4], f[5]]))
        .collect();
    seen_apis.sort_unstable();
    seen_apis.dedup();
    assert!(
        seen_apis.len() >= 10,
        "librdkafka's requests were captured: api keys {seen_apis:?}"
    );
    corpus.extend(encoded_corpus());
    println!(
        "corpus: {real} frames from librdkafka (api keys {seen_apis:?}), {} encoded here",
        corpus.len() - real
    );
    let mut w = Wire::connect(port);
    create_topic(&mut w, "fuzz-check", 4);
    create_topic(&mut w, "fuzz-gen", 2);
    drop(w);
    every_shard_serves(port);

    let started = Instant::now();
    let mut rng = Rng(seed);
    let mut sent = 0u64;
    const ROUND: u64 = 200;
    const SENDERS: usize = 8;
    let corpus = Arc::new(corpus);
    while sent < requests && seconds.is_none_or(|s| started.elapsed() < Duration::from_secs(s)) {
        let round = ROUND.min(requests - sent);
        // The round's inputs come from the seed alone, whatever the
        // threads' timing.
        let inputs: Vec<Vec<u8>> = (0..round).map(|_| mutate(&mut rng, &corpus)).collect();
        let inputs = Arc::new(inputs);
        let senders: Vec<_> = (0..SENDERS)
            .map(|t| {
                let inputs = inputs.clone();
                std::thread::spawn(move || {
                    for f in inputs.iter().skip(t).step_by(SENDERS) {
                        send_one(port, f);
                    }
                })
            })
            .collect();
        for s in senders {
            s.join().unwrap();
        }
        sent += round;
        let alive = b.child.try_wait().unwrap().is_none();
        let served = alive && std::panic::catch_unwind(|| every_shard_serves(port)).is_ok();
        if !served {
            let threads = if alive {
                threads_of(b.child.id())
            } else {
                String::new()
            };
            let log = b.drain(Duration::from_millis(500));
            println!("broker threads (name, state, cpu ticks over 1 s):\n{threads}");
            panic!(
                "after {sent} requests (seed {seed}) the broker {}:\n{log}",
                if alive { "stopped serving" } else { "exited" }
            );
        }
    }
    let log = b.drain(Duration::from_millis(500));
    assert!(
        !log.contains("panicked"),
        "seed {seed}, {sent} requests:\n{log}"
    );
    println!(
        "fuzz: {sent} requests in {:?}, every shard serving (seed {seed})",
        started.elapsed()
    );
}

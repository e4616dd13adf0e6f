//! `sluice loadgen` against a running broker: the counts in its report
//! match the topic's end offsets and what its consumers read, the JSON and
//! CSV have the documented shape, and bad runs fail fast with a message.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_port, tempdir, Broker, BIN};
use kafka_protocol::messages::ApiKey;
use sluice_net::client::Client;

fn loadgen(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("loadgen")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn end_offsets_sum(bootstrap: &str, topic: &str, partitions: i32) -> i64 {
    let mut c = Client::connect(bootstrap, Duration::from_secs(5)).unwrap();
    let layout = sluice_loadgen::run::ensure_topic(&mut c, topic, partitions).unwrap();
    assert_eq!(layout.leaders.len(), partitions as usize);
    sluice_loadgen::run::end_offsets(&mut c, &layout)
        .unwrap()
        .iter()
        .sum()
}

#[test]
fn counts_match_the_topic_and_the_consumers() {
    let dir = tempdir();
    let b = Broker::start(&dir.path().join("data"), 1, &[]);
    let json = dir.path().join("report.json");
    let csv = dir.path().join("series.csv");
    let (code, out, err) = loadgen(&[
        "--bootstrap",
        &b.bootstrap(),
        "--topic",
        "lg",
        "--partitions",
        "3",
        "--producers",
        "2",
        "--consumers",
        "2",
        "--messages",
        "30001",
        "--message-bytes",
        "50..300",
        "--batch-bytes",
        "8192",
        "--keys",
        "zipf:1.1",
        "--compression",
        "lz4",
        "--json",
        json.to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("produced: 30001 messages"), "{out}");
    // As fast as possible there is no schedule to be late for.
    assert!(!out.contains("sender lag"), "{out}");
    assert!(out.contains("consumed: 30001 messages"), "{out}");
    assert!(out.contains("errors: none"), "{out}");
    assert_eq!(end_offsets_sum(&b.bootstrap(), "lg", 3), 30001);
    // The two consumers read as one group, committed what they read and
    // left: the group is empty with nothing left to read.
    let groups = Command::new(BIN)
        .args(["group", "list", "--json", "--bootstrap", &b.bootstrap()])
        .output()
        .unwrap();
    let groups = String::from_utf8_lossy(&groups.stdout);
    assert!(groups.contains("lg-group"), "{groups}");
    let desc = Command::new(BIN)
        .args([
            "group",
            "describe",
            "lg-group",
            "--json",
            "--bootstrap",
            &b.bootstrap(),
        ])
        .output()
        .unwrap();
    let desc = String::from_utf8_lossy(&desc.stdout);
    assert!(desc.contains("Empty"), "{desc}");
    let d: serde_json::Value = serde_json::from_str(&desc).unwrap();
    let offsets = d["offsets"].as_array().unwrap();
    assert_eq!(offsets.len(), 3, "{d}");
    for o in offsets {
        assert_eq!(o["lag"], 0, "{d}");
        assert_eq!(o["committed"], o["end"], "{d}");
    }
    let ends: Vec<i64> = offsets.iter().map(|o| o["end"].as_i64().unwrap()).collect();
    assert_eq!(ends.iter().sum::<i64>(), 30001);
    assert!(
        ends.iter().filter(|e| **e > 0).count() >= 2,
        "keys spread: {ends:?}"
    );

    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["produce"]["messages"], 30001);
    assert_eq!(r["consume"]["messages"], 30001);
    assert_eq!(r["produce"]["bytes"], r["consume"]["bytes"]);
    let bytes = r["produce"]["bytes"].as_u64().unwrap();
    assert!(
        (50 * 30001..=300 * 30001 + 30001 * 8).contains(&bytes),
        "{bytes}"
    );
    for side in ["produce", "consume"] {
        for k in ["messages", "bytes", "msgs_per_sec", "mb_per_sec", "errors"] {
            assert!(!r[side][k].is_null(), "{side}.{k} in {r}");
        }
    }
    for h in ["produce_latency_us", "end_to_end_latency_us"] {
        let p = &r[h];
        let v: Vec<u64> = ["p50", "p90", "p99", "p999", "p9999", "max"]
            .iter()
            .map(|k| p[*k].as_u64().unwrap_or_else(|| panic!("{h}.{k} in {r}")))
            .collect();
        assert!(v[0] > 0 && v.windows(2).all(|w| w[0] <= w[1]), "{h}: {v:?}");
    }
    assert_eq!(r["params"]["compression"], "lz4");
    assert_eq!(r["params"]["partitions"], 3);
    assert!(r["host"]["cores"].as_u64().unwrap() >= 1);
    assert!(!r["host"]["kernel"].as_str().unwrap().is_empty());
    // The series adds up to the totals (no warm-up here).
    let series = r["series"].as_array().unwrap();
    assert!(!series.is_empty());
    let produced: u64 = series.iter().map(|s| s["produced"].as_u64().unwrap()).sum();
    let consumed: u64 = series.iter().map(|s| s["consumed"].as_u64().unwrap()).sum();
    assert_eq!((produced, consumed), (30001, 30001));
    let csv = std::fs::read_to_string(&csv).unwrap();
    assert!(csv.starts_with("second,warmup,produced,"), "{csv}");
    assert_eq!(csv.lines().count(), series.len() + 1);
}

#[test]
fn a_fixed_rate_run_keeps_its_rate_and_stops_on_time() {
    let dir = tempdir();
    let b = Broker::start(&dir.path().join("data"), 1, &[]);
    let json = dir.path().join("report.json");
    let (code, out, err) = loadgen(&[
        "--bootstrap",
        &b.bootstrap(),
        "--partitions",
        "2",
        "--rate",
        "2000",
        "--duration",
        "2s",
        "--warmup",
        "1s",
        "--acks",
        "1",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    // 2 s measured at 2000/s; the warm-up second is not counted.
    let n = r["produce"]["messages"].as_u64().unwrap();
    assert!((3_900..=4_001).contains(&n), "{n}");
    assert_eq!(r["consume"]["messages"].as_u64().unwrap(), n);
    let series = r["series"].as_array().unwrap();
    assert_eq!(series[0]["warmup"], true, "{series:?}");
    // The sender's own lateness is reported, and it is part of every
    // message's produce latency, so it can never exceed it.
    assert!(out.contains("sender lag (us): p50 "), "{out}");
    let lag = &r["send_lag_us"];
    let (lag_p50, lag_max) = (lag["p50"].as_u64().unwrap(), lag["max"].as_u64().unwrap());
    assert!(lag_p50 <= lag_max, "{lag}");
    assert!(
        lag_max <= r["produce_latency_us"]["max"].as_u64().unwrap(),
        "{lag} against {}",
        r["produce_latency_us"]
    );
}

#[test]
fn bad_runs_fail_fast_with_a_message() {
    let port = free_port();
    let t = Instant::now();
    let (code, _, err) = loadgen(&[
        "--bootstrap",
        &format!("127.0.0.1:{port}"),
        "--messages",
        "10",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot connect to 127.0.0.1"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(30));
    let (code, _, err) = loadgen(&["--acks", "2"]);
    assert_ne!(code, 0);
    assert!(err.contains("expected 0, 1 or all"), "{err}");
    let (code, _, err) = loadgen(&[
        "--keys",
        "zipf:x",
        "--bootstrap",
        &format!("127.0.0.1:{port}"),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("zipf:S"), "{err}");
}

/// --backlog writes first and then measures consumers reading it all back;
/// with no producers, consumers read what the topic holds and stop.
#[test]
fn backlog_and_catch_up_read_everything_back() {
    let dir = tempdir();
    let b = Broker::start(&dir.path().join("data"), 1, &[]);
    let json = dir.path().join("backlog.json");
    let html = dir.path().join("backlog.html");
    let (code, out, err) = loadgen(&[
        "--bootstrap",
        &b.bootstrap(),
        "--topic",
        "backlog",
        "--partitions",
        "2",
        "--producers",
        "1",
        "--consumers",
        "2",
        "--backlog",
        "2MB",
        "--batch-bytes",
        "65536",
        "--json",
        json.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let produced = r["produce"]["messages"].as_u64().unwrap();
    assert!(r["produce"]["bytes"].as_u64().unwrap() >= 2_000_000, "{r}");
    assert_eq!(r["consume"]["messages"].as_u64().unwrap(), produced);
    assert_eq!(
        end_offsets_sum(&b.bootstrap(), "backlog", 2),
        produced as i64
    );
    assert!(r["consume"]["seconds"].as_f64().unwrap() > 0.0);
    // The page stands alone: charts inline, nothing fetched.
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert_eq!(page.matches("<svg").count(), 3, "{page}");
    assert!(page.contains("Latency by percentile"));
    assert!(!page.contains("src=") && !page.contains("href=") && !page.contains("<script"));

    let (code, out, err) = loadgen(&[
        "--bootstrap",
        &b.bootstrap(),
        "--topic",
        "backlog",
        "--producers",
        "0",
        "--consumers",
        "1",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["consume"]["messages"].as_u64().unwrap(), produced);
    assert_eq!(r["produce"]["messages"].as_u64().unwrap(), 0);
}

/// loadgen against a broker in this process (both on glommio executors
/// of their own): what the report counts is what the topic holds and
/// what the group consumed.
#[test]
fn in_process_broker_and_report_agree() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        args: sluice_loadgen::args::LoadgenArgs,
    }

    let dir = tempdir();
    let port = free_port();
    let mut cfg = sluice_broker::config::BrokerConfig::with_defaults(
        format!("127.0.0.1:{port}").parse().unwrap(),
        &dir.path().join("data"),
    );
    cfg.cores = Some(1);
    cfg.shard_memory_bytes = Some(128 << 20);
    cfg.cache_bytes_max = Some(64 << 20);
    let broker = sluice_broker::serve::start(cfg).expect("broker starts");
    assert_eq!(broker.failed(), 0);
    let bootstrap = format!("127.0.0.1:{port}");
    let args = Cmd::try_parse_from([
        "loadgen",
        "--bootstrap",
        &bootstrap,
        "--topic",
        "inproc",
        "--partitions",
        "4",
        "--producers",
        "2",
        "--consumers",
        "2",
        "--messages",
        "20000",
        "--message-bytes",
        "100",
        "--batch-bytes",
        "16384",
        "--acks",
        "all",
        "--keys",
        "round-robin",
        "--key-count",
        "64",
    ])
    .unwrap()
    .args;
    let mut out = Vec::new();
    let report = sluice_loadgen::run::run(args, &mut out).expect("loadgen runs");
    let text = String::from_utf8_lossy(&out);
    assert_eq!(report.produce.messages, 20000, "{text}");
    assert_eq!(report.consume.messages, 20000, "{text}");
    assert_eq!(report.produce.bytes, report.consume.bytes, "{text}");
    assert!(report.produce.errors.is_empty(), "{text}");
    assert!(report.consume.errors.is_empty(), "{text}");
    // Every message produced is in the topic, once.
    assert_eq!(end_offsets_sum(&bootstrap, "inproc", 4), 20000);
    // Every message consumed carried its send time: one end-to-end
    // sample each, and the series adds up to the totals.
    let consumed: u64 = report.series.iter().map(|s| s.consumed).sum();
    let produced: u64 = report.series.iter().map(|s| s.produced).sum();
    assert_eq!((produced, consumed), (20000, 20000));
    assert!(report.end_to_end_latency_us.p50 > 0);
    assert!(report.end_to_end_latency_us.max >= report.end_to_end_latency_us.p99);
    broker.stop().expect("stops cleanly");
}

/// What the stand-in broker in front of the real one plays.
#[derive(Clone)]
enum Role {
    /// It led the topic and no longer does: until it has refused a
    /// client, its Metadata answers (the real broker's, rewritten) name it
    /// the leader of every partition; it refuses every Produce and Fetch
    /// with NOT_LEADER_OR_FOLLOWER.
    Former,
    /// It leads these partitions (Metadata says so, next to the real
    /// broker for the rest) and passes their Produce and Fetch requests on
    /// to the real broker.
    Leads(Vec<i32>),
}

/// A stand-in broker: forwards what its role does not answer itself to
/// the real broker, and records the partitions of every Produce and
/// Fetch it was sent.
struct StandIn {
    port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(ApiKey, i32)>>>,
}

impl StandIn {
    fn start(real: u16, role: Role) -> StandIn {
        use std::sync::atomic::AtomicBool;
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let moved = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let (moved, log, role) = (moved.clone(), log.clone(), role.clone());
                std::thread::spawn(move || {
                    let _ = stand_in_connection(client, real, port, &role, &moved, &log);
                });
            }
        });
        StandIn { port, seen }
    }

    /// The partitions of the `api` requests it was sent.
    fn partitions(&self, api: ApiKey) -> Vec<i32> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|(a, _)| *a == api)
            .map(|(_, p)| *p)
            .collect()
    }
}

fn read_frame(s: &mut std::net::TcpStream) -> std::io::Result<bytes::Bytes> {
    use std::io::Read;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body)?;
    Ok(body.into())
}

/// A Produce or Fetch answer refusing every named partition with
/// NOT_LEADER_OR_FOLLOWER.
fn not_leader(
    api: ApiKey,
    named: &[(kafka_protocol::messages::TopicName, Vec<i32>)],
) -> kafka_protocol::messages::ResponseKind {
    use kafka_protocol::messages::*;
    const NOT_LEADER: i16 = 6;
    if api == ApiKey::Produce {
        ResponseKind::Produce(
            ProduceResponse::default().with_responses(
                named
                    .iter()
                    .map(|(name, ps)| {
                        produce_response::TopicProduceResponse::default()
                            .with_name(name.clone())
                            .with_partition_responses(
                                ps.iter()
                                    .map(|p| {
                                        produce_response::PartitionProduceResponse::default()
                                            .with_index(*p)
                                            .with_error_code(NOT_LEADER)
                                            .with_base_offset(-1)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            ),
        )
    } else {
        ResponseKind::Fetch(
            FetchResponse::default().with_responses(
                named
                    .iter()
                    .map(|(name, ps)| {
                        fetch_response::FetchableTopicResponse::default()
                            .with_topic(name.clone())
                            .with_partitions(
                                ps.iter()
                                    .map(|p| {
                                        fetch_response::PartitionData::default()
                                            .with_partition_index(*p)
                                            .with_error_code(NOT_LEADER)
                                            .with_high_watermark(-1)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            ),
        )
    }
}

fn stand_in_connection(
    mut client: std::net::TcpStream,
    real: u16,
    me: u16,
    role: &Role,
    moved: &std::sync::atomic::AtomicBool,
    seen: &std::sync::Mutex<Vec<(ApiKey, i32)>>,
) -> std::io::Result<()> {
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{Decodable, StrBytes};
    use sluice_net::response::encode_response;
    use std::io::Write;
    use std::sync::atomic::Ordering;
    const ME: i32 = 7;
    let mut upstream = std::net::TcpStream::connect(("127.0.0.1", real))?;
    loop {
        let frame = read_frame(&mut client)?;
        let req = sluice_net::request::decode_request(frame.clone(), |_| Some((0, i16::MAX)))
            .expect("loadgen sends well-formed requests");
        let id = req.header.correlation_id;
        let refuse = matches!(role, Role::Former);
        // The partitions a Produce or Fetch names, by topic.
        let named: Vec<(TopicName, Vec<i32>)> = match &req.body {
            RequestKind::Produce(p) => p
                .topic_data
                .iter()
                .map(|t| {
                    (
                        t.name.clone(),
                        t.partition_data.iter().map(|d| d.index).collect(),
                    )
                })
                .collect(),
            RequestKind::Fetch(f) => f
                .topics
                .iter()
                .map(|t| {
                    (
                        t.topic.clone(),
                        t.partitions.iter().map(|p| p.partition).collect(),
                    )
                })
                .collect(),
            _ => Vec::new(),
        };
        let data = matches!(req.api_key, ApiKey::Produce | ApiKey::Fetch);
        if data {
            let mut log = seen.lock().unwrap();
            for (_, ps) in &named {
                log.extend(ps.iter().map(|p| (req.api_key, *p)));
            }
        }
        let answer = (data && refuse).then(|| {
            moved.store(true, Ordering::SeqCst);
            not_leader(req.api_key, &named)
        });
        let whole = match answer {
            Some(r) => encode_response(id, req.api_key, req.version, &r).unwrap(),
            None => {
                let mut out = (frame.len() as i32).to_be_bytes().to_vec();
                out.extend_from_slice(&frame);
                upstream.write_all(&out)?;
                let answer = read_frame(&mut upstream)?;
                let rewrite =
                    req.api_key == ApiKey::Metadata && !(refuse && moved.load(Ordering::SeqCst));
                if !rewrite {
                    let mut whole = (answer.len() as i32).to_be_bytes().to_vec();
                    whole.extend_from_slice(&answer);
                    whole.into()
                } else {
                    let mut body = answer;
                    let hv =
                        sluice_net::response::response_header_version(req.api_key, req.version);
                    ResponseHeader::decode(&mut body, hv).unwrap();
                    let mut m = MetadataResponse::decode(&mut body, req.version).unwrap();
                    let stand_in = metadata_response::MetadataResponseBroker::default()
                        .with_node_id(BrokerId(ME))
                        .with_host(StrBytes::from_static_str("127.0.0.1"))
                        .with_port(i32::from(me));
                    if refuse {
                        m.brokers = vec![stand_in];
                        m.controller_id = BrokerId(ME);
                    } else {
                        m.brokers.push(stand_in);
                    }
                    for t in &mut m.topics {
                        for p in &mut t.partitions {
                            let led = match role {
                                Role::Former => true,
                                Role::Leads(ps) => ps.contains(&p.partition_index),
                            };
                            if led {
                                p.leader_id = BrokerId(ME);
                                p.replica_nodes = vec![BrokerId(ME)];
                                p.isr_nodes = vec![BrokerId(ME)];
                            }
                        }
                    }
                    encode_response(id, req.api_key, req.version, &ResponseKind::Metadata(m))
                        .unwrap()
                }
            }
        };
        client.write_all(&whole)?;
    }
}

/// The leaders move while loadgen runs: the producers and the consumers
/// are refused by the broker Metadata named first, count the refusals,
/// ask for the leaders again and carry on against the new leader; what
/// was acknowledged is exactly what the topic holds and what the group
/// read.
#[test]
fn follows_leaders_that_move() {
    let dir = tempdir();
    let b = Broker::start(&dir.path().join("data"), 1, &[]);
    let real = b.bootstrap();
    // The topic exists on the real broker first; loadgen meets it through
    // the former leader.
    end_offsets_sum(&real, "moving", 3);
    let former = StandIn::start(b.port, Role::Former);
    let json = dir.path().join("report.json");
    let (code, out, err) = loadgen(&[
        "--bootstrap",
        &format!("127.0.0.1:{}", former.port),
        "--topic",
        "moving",
        "--partitions",
        "3",
        "--producers",
        "2",
        "--consumers",
        "2",
        "--messages",
        "20000",
        "--message-bytes",
        "100",
        "--batch-bytes",
        "4096",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!former.partitions(ApiKey::Produce).is_empty(), "{out}");
    assert!(!former.partitions(ApiKey::Fetch).is_empty(), "{out}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    // The refusals are counted, by kind, on their side.
    assert!(
        r["produce"]["errors"]["NotLeaderOrFollower"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "{r}"
    );
    assert!(
        r["consume"]["errors"]
            .as_object()
            .unwrap()
            .iter()
            .any(|(k, v)| k.contains("NotLeaderOrFollower") && v.as_u64().unwrap() >= 1),
        "{r}"
    );
    // Refused batches are not in the topic; everything acknowledged is,
    // and the group read all of it.
    let acked = r["produce"]["messages"].as_u64().unwrap();
    assert!(acked > 0 && acked <= 20000, "{r}");
    assert_eq!(end_offsets_sum(&real, "moving", 3) as u64, acked);
    assert_eq!(r["consume"]["messages"].as_u64().unwrap(), acked, "{r}");
}

/// Partitions of one topic on two leaders: each producer sends every
/// partition's batches to its own leader, and one consumer that owns all
/// partitions fetches each from its leader, both leaders at once.
#[test]
fn reads_and_writes_each_partition_at_its_leader() {
    let dir = tempdir();
    let b = Broker::start(&dir.path().join("data"), 1, &[]);
    end_offsets_sum(&b.bootstrap(), "split", 3);
    let other = StandIn::start(b.port, Role::Leads(vec![1]));
    let json = dir.path().join("report.json");
    let (code, out, err) = loadgen(&[
        "--bootstrap",
        &format!("127.0.0.1:{}", other.port),
        "--topic",
        "split",
        "--partitions",
        "3",
        "--producers",
        "2",
        "--consumers",
        "1",
        "--messages",
        "20000",
        "--message-bytes",
        "100",
        "--batch-bytes",
        "4096",
        "--keys",
        "round-robin",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("errors: none"), "{out}");
    let (produced, fetched) = (
        other.partitions(ApiKey::Produce),
        other.partitions(ApiKey::Fetch),
    );
    assert!(
        !produced.is_empty() && produced.iter().all(|p| *p == 1),
        "{produced:?}"
    );
    assert!(
        !fetched.is_empty() && fetched.iter().all(|p| *p == 1),
        "{fetched:?}"
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["produce"]["messages"], 20000, "{r}");
    assert_eq!(r["consume"]["messages"], 20000, "{r}");
    assert_eq!(end_offsets_sum(&b.bootstrap(), "split", 3), 20000);
}

//! `sluice loadgen` against a running broker: the counts in its report
//! match the topic's end offsets and what its consumers read, the JSON and
//! CSV have the documented shape, and bad runs fail fast with a message.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_port, tempdir, Broker, BIN};
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

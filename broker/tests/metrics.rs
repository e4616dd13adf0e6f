//! The admin endpoint: `/metrics` counts what a producer sent, `/health`
//! answers 200, anything else 404.

mod common;

use std::io::{Read, Write};

use common::{run_sluice, tempdir, Broker};

/// GET `path` from the admin endpoint: (status line, body).
fn get(addr: &str, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// The value of the sample `name{labels...}` whose labels contain every
/// one of `want`.
fn sample(text: &str, name: &str, want: &[&str]) -> Option<u64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| want.iter().all(|w| l.contains(w)))
        .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
}

#[test]
fn metrics_count_what_was_produced_and_health_answers() {
    let data = tempdir();
    let mut b = Broker::start(data.path(), 2, &[]);
    assert!(b.wait_for("admin endpoint at http://"), "{:#?}", b.seen);
    let line = b
        .seen
        .iter()
        .find(|l| l.contains("admin endpoint at"))
        .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();

    let (status, body) = get(&addr, "/health");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");

    let msgs: String = (0..250).map(|i| format!("message-{i:04}\n")).collect();
    for _ in 0..2 {
        let (code, out, err) = run_sluice(
            &["produce", "metered", "--bootstrap", &b.bootstrap()],
            Some(&msgs),
        );
        assert_eq!(code, 0, "{out}{err}");
    }
    // A group that consumed and committed 120 of the 500.
    let (code, out, err) = run_sluice(
        &[
            "consume",
            "metered",
            "--group",
            "lagging",
            "--commit",
            "--count",
            "120",
            "--bootstrap",
            &b.bootstrap(),
        ],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    // Three produces to a partition that does not exist: three error
    // codes in answers.
    let mut w = common::wire::Wire::connect(b.port);
    for _ in 0..3 {
        let (code, _) = common::wire::produce(
            &mut w,
            "metered",
            7,
            sluice_storage::batch::build::uniform(1, 1, 0),
        );
        assert_eq!(code, 3, "UNKNOWN_TOPIC_OR_PARTITION");
    }
    let (status, text) = get(&addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let p0 = ["topic=\"metered\"", "partition=\"0\""];
    assert_eq!(
        sample(&text, "sluice_partition_records_in_total", &p0),
        Some(500),
        "{text}"
    );
    assert_eq!(
        sample(&text, "sluice_partition_log_end_offset", &p0),
        Some(500)
    );
    assert_eq!(
        sample(&text, "sluice_partition_high_watermark", &p0),
        Some(500)
    );
    let bytes_in = sample(&text, "sluice_partition_bytes_in_total", &p0).unwrap();
    // 500 values of 12 bytes, in batches with their headers.
    assert!(bytes_in > 500 * 12, "{bytes_in}");
    let on_disk = sample(&text, "sluice_partition_log_bytes", &p0).unwrap();
    assert_eq!(on_disk, bytes_in, "what was appended is what the log holds");
    // One sample per shard for the shard families.
    for shard in ["shard=\"0\"", "shard=\"1\""] {
        assert!(sample(&text, "sluice_cache_budget_bytes", &[shard]).unwrap() > 0);
        assert!(sample(&text, "sluice_request_memory_budget_bytes", &[shard]).unwrap() > 0);
    }
    assert_eq!(
        text.matches("# TYPE sluice_stalls_total counter").count(),
        1
    );
    // Each produce run sent at least one Produce request; every counted
    // request is in its API's latency histogram.
    let total = |name: &str, with: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(with))
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
            .sum()
    };
    let sum = |name: &str| total(name, "api=\"Produce\"");
    let produces = sum("sluice_requests_total");
    assert!(produces >= 2, "{text}");
    assert_eq!(sum("sluice_request_latency_seconds_count"), produces);
    assert!(
        text.contains("sluice_requests_total{api=\"Metadata\""),
        "{text}"
    );
    // Summed over the shards: the storage saw the partition's appends,
    // and each produce run was a connection.
    assert_eq!(total("sluice_storage_appended_bytes_total", ""), bytes_in);
    assert!(total("sluice_storage_appends_total", "") >= 2);
    // The group's consumer fetched at least the 120 records it read (in
    // whole batches, so perhaps more), never more than were produced.
    let out = total("sluice_partition_records_out_total", "topic=\"metered\"");
    assert!((120..=500).contains(&out), "{out}\n{text}");
    assert!(total("sluice_partition_bytes_out_total", "topic=\"metered\"") > 120 * 12);
    let syncs = total("sluice_storage_syncs_total", "");
    assert!(syncs >= 1);
    // The storage histograms cover every log of the shard (the groups'
    // offsets logs too): at least the topic's appends and syncs, and one
    // group-commit size per fdatasync.
    let fdatasyncs = total("sluice_storage_fdatasync_seconds_count", "");
    assert!(fdatasyncs >= 1, "{text}");
    assert_eq!(
        total("sluice_storage_group_commit_appends_count", ""),
        fdatasyncs
    );
    assert!(total("sluice_storage_group_commit_appends_sum", "") >= 1);
    assert!(
        total("sluice_storage_append_seconds_count", "")
            >= total("sluice_storage_appends_total", ""),
        "{text}"
    );
    assert!(total("sluice_storage_write_seconds_count", "") >= 1);
    assert_eq!(
        total(
            "sluice_request_errors_total",
            "api=\"Produce\",error=\"UNKNOWN_TOPIC_OR_PARTITION\""
        ),
        3,
        "{text}"
    );
    assert!(total("sluice_connections_accepted_total", "") >= 2);
    assert_eq!(total("sluice_connections_refused_total", ""), 0);

    assert_eq!(
        sample(
            &text,
            "sluice_group_lag_records",
            &["group=\"lagging\"", "topic=\"metered\"", "partition=\"0\""]
        ),
        Some(380),
        "{text}"
    );

    let (status, _) = get(&addr, "/nothing-here");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    b.stop();
}

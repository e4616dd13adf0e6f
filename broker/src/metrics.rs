//! `/metrics`: each shard's counters and gauges, read on that shard
//! (`collect`) when a scrape comes and summed or labelled by shard here
//! (`render`, the Prometheus text format). Nothing is kept for the
//! scrape on the hot path: the counters are the ones the shard keeps
//! anyway (partition logs, cache, request memory, heap, stalls), plus a
//! byte and record count per partition bumped on each leader append.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use crate::shard::Shard;

use sluice_storage::histogram::{Histogram, StorageHistograms};

/// This shard's requests: a count per (API key, version), a latency
/// histogram per API key (from the request's decoding to its answer
/// being ready) and a count per (API key, error code) of the non-zero
/// error codes in answers (one per partition, group or resource that
/// carries one). Kept per thread: each shard has its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestStats {
    pub counts: BTreeMap<(i16, i16), u64>,
    pub latency: BTreeMap<i16, Histogram>,
    pub errors: BTreeMap<(i16, i16), u64>,
}

thread_local! {
    static REQUESTS: RefCell<RequestStats> = RefCell::new(RequestStats::default());
}

/// Counts one answered request of this shard.
pub fn record_request(api_key: i16, version: i16, took: Duration) {
    REQUESTS.with_borrow_mut(|r| {
        *r.counts.entry((api_key, version)).or_default() += 1;
        r.latency
            .entry(api_key)
            .or_insert_with(Histogram::latency)
            .record(took);
    });
}

/// Counts the non-zero error codes `codes` gives for one answer of
/// `api_key`.
pub fn record_errors(api_key: i16, codes: impl Iterator<Item = i16>) {
    let mut codes = codes.filter(|&c| c != 0).peekable();
    if codes.peek().is_none() {
        return;
    }
    REQUESTS.with_borrow_mut(|r| {
        for c in codes {
            *r.errors.entry((api_key, c)).or_default() += 1;
        }
    });
}

/// Every error code an answer carries (top-level, per group, topic,
/// partition or resource), for `record_errors`. Fetch answers are counted
/// where they are built (`apis::fetch`).
pub fn error_codes(body: &kafka_protocol::messages::ResponseKind) -> Vec<i16> {
    use kafka_protocol::messages::ResponseKind as K;
    let mut c = Vec::new();
    match body {
        K::Produce(r) => r
            .responses
            .iter()
            .for_each(|t| c.extend(t.partition_responses.iter().map(|p| p.error_code))),
        K::ListOffsets(r) => r
            .topics
            .iter()
            .for_each(|t| c.extend(t.partitions.iter().map(|p| p.error_code))),
        K::Metadata(r) => r.topics.iter().for_each(|t| {
            c.push(t.error_code);
            c.extend(t.partitions.iter().map(|p| p.error_code));
        }),
        K::OffsetCommit(r) => r
            .topics
            .iter()
            .for_each(|t| c.extend(t.partitions.iter().map(|p| p.error_code))),
        K::OffsetFetch(r) => {
            c.push(r.error_code);
            r.topics
                .iter()
                .for_each(|t| c.extend(t.partitions.iter().map(|p| p.error_code)));
            r.groups.iter().for_each(|g| {
                c.push(g.error_code);
                g.topics
                    .iter()
                    .for_each(|t| c.extend(t.partitions.iter().map(|p| p.error_code)));
            });
        }
        K::FindCoordinator(r) => {
            c.push(r.error_code);
            c.extend(r.coordinators.iter().map(|x| x.error_code));
        }
        K::JoinGroup(r) => c.push(r.error_code),
        K::SyncGroup(r) => c.push(r.error_code),
        K::Heartbeat(r) => c.push(r.error_code),
        K::LeaveGroup(r) => {
            c.push(r.error_code);
            c.extend(r.members.iter().map(|m| m.error_code));
        }
        K::DescribeGroups(r) => c.extend(r.groups.iter().map(|g| g.error_code)),
        K::ListGroups(r) => c.push(r.error_code),
        K::DeleteGroups(r) => c.extend(r.results.iter().map(|g| g.error_code)),
        K::OffsetDelete(r) => {
            c.push(r.error_code);
            r.topics
                .iter()
                .for_each(|t| c.extend(t.partitions.iter().map(|p| p.error_code)));
        }
        K::CreateTopics(r) => c.extend(r.topics.iter().map(|t| t.error_code)),
        K::DeleteTopics(r) => c.extend(r.responses.iter().map(|t| t.error_code)),
        K::CreatePartitions(r) => c.extend(r.results.iter().map(|t| t.error_code)),
        K::DescribeConfigs(r) => c.extend(r.results.iter().map(|t| t.error_code)),
        K::AlterConfigs(r) => c.extend(r.responses.iter().map(|t| t.error_code)),
        K::IncrementalAlterConfigs(r) => c.extend(r.responses.iter().map(|t| t.error_code)),
        K::InitProducerId(r) => c.push(r.error_code),
        K::DescribeCluster(r) => c.push(r.error_code),
        K::DescribeQuorum(r) => {
            c.push(r.error_code);
            r.topics
                .iter()
                .for_each(|t| c.extend(t.partitions.iter().map(|p| p.error_code)));
        }
        K::AlterPartitionReassignments(r) => {
            c.push(r.error_code);
            r.responses
                .iter()
                .for_each(|t| c.extend(t.partitions.iter().map(|p| p.error_code)));
        }
        K::ListPartitionReassignments(r) => c.push(r.error_code),
        K::OffsetForLeaderEpoch(r) => r
            .topics
            .iter()
            .for_each(|t| c.extend(t.partitions.iter().map(|p| p.error_code))),
        K::ApiVersions(r) => c.push(r.error_code),
        K::SaslHandshake(r) => c.push(r.error_code),
        K::SaslAuthenticate(r) => c.push(r.error_code),
        K::DescribeUserScramCredentials(r) => {
            c.push(r.error_code);
            c.extend(r.results.iter().map(|u| u.error_code));
        }
        K::AlterUserScramCredentials(r) => c.extend(r.results.iter().map(|u| u.error_code)),
        K::CreateAcls(r) => c.extend(r.results.iter().map(|a| a.error_code)),
        K::DescribeAcls(r) => c.push(r.error_code),
        K::DeleteAcls(r) => c.extend(r.filter_results.iter().map(|a| a.error_code)),
        _ => {}
    }
    c
}

/// One partition's figures on the shard that owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetrics {
    pub topic: String,
    pub partition: i32,
    pub log_start: i64,
    pub log_end: i64,
    pub high_watermark: i64,
    pub log_bytes: u64,
    pub bytes_in: u64,
    pub records_in: u64,
    pub bytes_out: u64,
    pub records_out: u64,
    /// On a node of a cluster that leads the partition: whether a replica
    /// is out of its ISR. `None` elsewhere.
    pub under_replicated: Option<bool>,
}

/// Whether a partition this node leads has a replica out of its ISR.
pub fn under_replicated(role: &crate::metadata::Role) -> Option<bool> {
    role.leader
        .then(|| role.replicas.iter().any(|r| !role.isr.contains(r)))
}

/// One shard's figures, taken on the shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardMetrics {
    pub shard: usize,
    pub partitions: Vec<PartitionMetrics>,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_used_bytes: u64,
    pub cache_budget_bytes: u64,
    pub request_memory_used_bytes: u64,
    pub request_memory_budget_bytes: u64,
    pub request_memory_waits: u64,
    pub heap_bytes: u64,
    pub heap_in_use_bytes: u64,
    pub stalls: u64,
    pub requests: RequestStats,
    pub connections_accepted: u64,
    pub connections_open: u64,
    pub connections_refused: u64,
    pub fetch_bytes_read: u64,
    /// Storage counters summed over the shard's partitions.
    pub storage: sluice_storage::LogStats,
    pub storage_histograms: StorageHistograms,
    /// (group, topic, partition, committed offset) of the groups this
    /// shard coordinates.
    pub committed: Vec<(String, String, i32, i64)>,
}

/// Reads this shard's figures (runs on the shard).
pub fn collect(shard: &Shard) -> ShardMetrics {
    let mut storage = sluice_storage::LogStats::default();
    let mut partitions: Vec<PartitionMetrics> = shard
        .owned()
        .iter()
        .map(|p| {
            storage += p.log.stats();
            PartitionMetrics {
                topic: p.topic.clone(),
                partition: p.index,
                log_start: p.log.log_start_offset(),
                log_end: p.log.log_end_offset(),
                high_watermark: p.log.high_watermark(),
                log_bytes: p.log.segments().iter().map(|s| s.bytes).sum(),
                bytes_in: p.bytes_in.get(),
                records_in: p.records_in.get(),
                bytes_out: p.bytes_out.get(),
                records_out: p.records_out.get(),
                under_replicated: p
                    .replication
                    .role
                    .borrow()
                    .as_ref()
                    .and_then(under_replicated),
            }
        })
        .collect();
    partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let cache = shard.cache_stats();
    let stats = shard.stats.get();
    let mut committed = Vec::new();
    for c in shard.coordinators_here() {
        for g in c.offsets.groups() {
            for (topic, partition, at) in c.offsets.of_group(&g) {
                committed.push((g.clone(), topic, partition, at.offset));
            }
        }
    }
    let heap = sluice_storage::shard_heap::stats(shard.id);
    ShardMetrics {
        shard: shard.id,
        partitions,
        cache_hits: cache.hits,
        cache_misses: cache.misses,
        cache_used_bytes: cache.used_bytes as u64,
        cache_budget_bytes: shard.cache_budget() as u64,
        request_memory_used_bytes: shard.request_memory.used() as u64,
        request_memory_budget_bytes: shard.request_memory.budget() as u64,
        request_memory_waits: shard.request_memory.waits(),
        heap_bytes: heap.bytes as u64,
        heap_in_use_bytes: heap.in_use as u64,
        stalls: sluice_storage::stall::count(),
        requests: REQUESTS.with_borrow(|r| r.clone()),
        connections_accepted: stats.connections_accepted,
        connections_open: stats.connections_open,
        connections_refused: stats.connections_refused,
        fetch_bytes_read: stats.fetch_bytes_read,
        storage,
        storage_histograms: sluice_storage::histogram::storage(),
        committed,
    }
}

fn api_name(key: i16) -> String {
    kafka_protocol::messages::ApiKey::try_from(key)
        .map(|k| format!("{k:?}"))
        .unwrap_or_else(|_| key.to_string())
}

/// Escapes a label value (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family: its HELP and TYPE lines, then a sample per row.
fn family<T>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    rows: impl IntoIterator<Item = T>,
    sample: impl Fn(&T) -> (String, u64),
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for r in rows {
        let (labels, v) = sample(&r);
        let _ = writeln!(out, "{name}{{{labels}}} {v}");
    }
}

/// A metric family read off one row type: name, type, help, value.
type Family<T> = (&'static str, &'static str, &'static str, fn(&T) -> u64);

/// The Prometheus text exposition of every shard's figures.
pub fn render(shards: &[ShardMetrics]) -> String {
    let mut out = String::new();
    let parts: Vec<(usize, &PartitionMetrics)> = shards
        .iter()
        .flat_map(|s| s.partitions.iter().map(move |p| (s.shard, p)))
        .collect();
    let pl = |s: &usize, p: &PartitionMetrics| {
        format!(
            "topic=\"{}\",partition=\"{}\",shard=\"{s}\"",
            label(&p.topic),
            p.partition
        )
    };
    type P<'a> = (usize, &'a PartitionMetrics);
    let per_partition: [Family<PartitionMetrics>; 8] = [
        (
            "sluice_partition_bytes_in_total",
            "counter",
            "Record batch bytes appended to the partition as its leader, since this broker started.",
            |p| p.bytes_in,
        ),
        (
            "sluice_partition_records_in_total",
            "counter",
            "Records appended to the partition as its leader, since this broker started.",
            |p| p.records_in,
        ),
        (
            "sluice_partition_bytes_out_total",
            "counter",
            "Record batch bytes clients fetched from the partition, since this broker started.",
            |p| p.bytes_out,
        ),
        (
            "sluice_partition_records_out_total",
            "counter",
            "Records clients fetched from the partition (the offsets the batches span), since this broker started.",
            |p| p.records_out,
        ),
        (
            "sluice_partition_log_end_offset",
            "gauge",
            "The offset the partition's next record gets.",
            |p| p.log_end.max(0) as u64,
        ),
        (
            "sluice_partition_log_start_offset",
            "gauge",
            "The partition's first offset held.",
            |p| p.log_start.max(0) as u64,
        ),
        (
            "sluice_partition_high_watermark",
            "gauge",
            "The partition's high watermark: consumers read below it.",
            |p| p.high_watermark.max(0) as u64,
        ),
        (
            "sluice_partition_log_bytes",
            "gauge",
            "Bytes of the partition's segments on disk.",
            |p| p.log_bytes,
        ),
    ];
    for (name, kind, help, f) in per_partition {
        family(
            &mut out,
            name,
            kind,
            help,
            parts.iter(),
            |(s, p): &&P<'_>| (pl(s, p), f(p)),
        );
    }
    let led: Vec<&P<'_>> = parts
        .iter()
        .filter(|(_, p)| p.under_replicated.is_some())
        .collect();
    family(
        &mut out,
        "sluice_partition_under_replicated",
        "gauge",
        "1 when a replica of a partition this node leads is out of its ISR (replicas a reassignment adds count until they join), else 0; led partitions only.",
        led,
        |(s, p): &&P<'_>| (pl(s, p), u64::from(p.under_replicated == Some(true))),
    );
    let per_shard: [Family<ShardMetrics>; 21] = [
        (
            "sluice_connections_accepted_total",
            "counter",
            "Client connections the shard accepted.",
            |s| s.connections_accepted,
        ),
        (
            "sluice_connections_open",
            "gauge",
            "Client connections open on the shard.",
            |s| s.connections_open,
        ),
        (
            "sluice_connections_refused_total",
            "counter",
            "Client connections closed at once: the shard held its limit.",
            |s| s.connections_refused,
        ),
        (
            "sluice_fetch_bytes_total",
            "counter",
            "Record bytes fetches read from the shard's logs (consumers and followers).",
            |s| s.fetch_bytes_read,
        ),
        (
            "sluice_storage_appends_total",
            "counter",
            "Batches appended to the shard's partition logs.",
            |s| s.storage.appends,
        ),
        (
            "sluice_storage_appended_bytes_total",
            "counter",
            "Bytes appended to the shard's partition logs.",
            |s| s.storage.appended_bytes,
        ),
        (
            "sluice_storage_syncs_total",
            "counter",
            "fdatasync calls on segment data (group commits and rolls); appends per sync is the group-commit size.",
            |s| s.storage.syncs,
        ),
        (
            "sluice_storage_writes_total",
            "counter",
            "Direct I/O writes of segment data.",
            |s| s.storage.writes,
        ),
        (
            "sluice_storage_written_bytes_total",
            "counter",
            "Bytes written to segment files.",
            |s| s.storage.written_bytes,
        ),
        (
            "sluice_storage_disk_reads_total",
            "counter",
            "Reads served from disk (the cache did not hold the batch).",
            |s| s.storage.disk_reads,
        ),
        (
            "sluice_storage_disk_read_bytes_total",
            "counter",
            "Bytes read from segment files.",
            |s| s.storage.disk_read_bytes,
        ),
        (
            "sluice_cache_hits_total",
            "counter",
            "Reads served from the shard's batch cache.",
            |s| s.cache_hits,
        ),
        (
            "sluice_cache_misses_total",
            "counter",
            "Reads the shard's batch cache could not serve (read from disk).",
            |s| s.cache_misses,
        ),
        (
            "sluice_cache_bytes",
            "gauge",
            "Bytes held by the shard's batch cache.",
            |s| s.cache_used_bytes,
        ),
        (
            "sluice_cache_budget_bytes",
            "gauge",
            "The shard's batch cache budget.",
            |s| s.cache_budget_bytes,
        ),
        (
            "sluice_request_memory_bytes",
            "gauge",
            "Bytes of requests the shard's connections hold.",
            |s| s.request_memory_used_bytes,
        ),
        (
            "sluice_request_memory_budget_bytes",
            "gauge",
            "The shard's request memory budget.",
            |s| s.request_memory_budget_bytes,
        ),
        (
            "sluice_request_memory_waits_total",
            "counter",
            "Requests that waited for request memory.",
            |s| s.request_memory_waits,
        ),
        (
            "sluice_shard_heap_bytes",
            "gauge",
            "The shard's heap (resident, set up at start).",
            |s| s.heap_bytes,
        ),
        (
            "sluice_shard_heap_in_use_bytes",
            "gauge",
            "Bytes of the shard's heap in use.",
            |s| s.heap_in_use_bytes,
        ),
        (
            "sluice_stalls_total",
            "counter",
            "Tasks that ran past the stall threshold without yielding.",
            |s| s.stalls,
        ),
    ];
    for (name, kind, help, f) in per_shard {
        family(
            &mut out,
            name,
            kind,
            help,
            shards.iter(),
            |s: &&ShardMetrics| (format!("shard=\"{}\"", s.shard), f(s)),
        );
    }
    // Lag: a partition's high watermark (on its owner shard) less the
    // group's committed offset (on its coordinator's shard).
    let high: BTreeMap<(&str, i32), i64> = parts
        .iter()
        .map(|(_, p)| ((p.topic.as_str(), p.partition), p.high_watermark))
        .collect();
    let lags = shards
        .iter()
        .flat_map(|s| &s.committed)
        .filter_map(|(g, t, p, at)| {
            let hw = high.get(&(t.as_str(), *p))?;
            Some((
                format!(
                    "group=\"{}\",topic=\"{}\",partition=\"{p}\"",
                    label(g),
                    label(t)
                ),
                (hw - at).max(0) as u64,
            ))
        });
    family(
        &mut out,
        "sluice_group_lag_records",
        "gauge",
        "A group's records behind a partition's high watermark (from its committed offset).",
        lags,
        |row: &(String, u64)| row.clone(),
    );
    let requests = shards.iter().flat_map(|s| {
        s.requests.counts.iter().map(move |(&(key, version), &n)| {
            (
                format!(
                    "api=\"{}\",version=\"{version}\",shard=\"{}\"",
                    api_name(key),
                    s.shard
                ),
                n,
            )
        })
    });
    family(
        &mut out,
        "sluice_requests_total",
        "counter",
        "Kafka requests answered, by API and version.",
        requests,
        |row: &(String, u64)| row.clone(),
    );
    let errors = shards.iter().flat_map(|s| {
        s.requests.errors.iter().map(move |(&(key, code), &n)| {
            (
                format!(
                    "api=\"{}\",error=\"{}\",shard=\"{}\"",
                    api_name(key),
                    error_name(code),
                    s.shard
                ),
                n,
            )
        })
    });
    family(
        &mut out,
        "sluice_request_errors_total",
        "counter",
        "Error codes in answers (one per partition, group or resource carrying one), by API and error.",
        errors,
        |row: &(String, u64)| row.clone(),
    );
    histograms(
        &mut out,
        "sluice_request_latency_seconds",
        "Time from a request's decoding to its answer being ready, by API.",
        1e6,
        shards.iter().flat_map(|s| {
            s.requests.latency.iter().map(move |(&key, h)| {
                (
                    format!("api=\"{}\",shard=\"{}\"", api_name(key), s.shard),
                    h,
                )
            })
        }),
    );
    let per_shard = |pick: fn(&StorageHistograms) -> &Histogram| {
        shards.iter().map(move |s| {
            (
                format!("shard=\"{}\"", s.shard),
                pick(&s.storage_histograms),
            )
        })
    };
    histograms(
        &mut out,
        "sluice_storage_append_seconds",
        "Time a partition log's append takes (validation, stamping, caching, copying into the write buffer).",
        1e6,
        per_shard(|h| &h.append_us),
    );
    histograms(
        &mut out,
        "sluice_storage_write_seconds",
        "Time one segment write takes, issue to completion.",
        1e6,
        per_shard(|h| &h.write_us),
    );
    histograms(
        &mut out,
        "sluice_storage_fdatasync_seconds",
        "Time one fdatasync of segment data takes.",
        1e6,
        per_shard(|h| &h.sync_us),
    );
    histograms(
        &mut out,
        "sluice_storage_group_commit_appends",
        "Appends each fdatasync made durable (the group commit's size).",
        1.0,
        per_shard(|h| &h.commit_appends),
    );
    out
}

/// A histogram family: cumulative buckets, sum and count per label set;
/// bounds and sums are divided by `scale` (1e6: microseconds to seconds).
fn histograms<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    scale: f64,
    rows: impl Iterator<Item = (String, &'a Histogram)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (labels, h) in rows {
        let mut cumulative = 0;
        for (i, n) in h.buckets.iter().enumerate() {
            cumulative += n;
            let le = h
                .bounds
                .get(i)
                .map_or("+Inf".to_string(), |&b| format!("{}", b as f64 / scale));
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum as f64 / scale);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
    }
}

/// Kafka's name of an error code (TOPIC_AUTHORIZATION_FAILED), or the
/// number.
fn error_name(code: i16) -> String {
    match kafka_protocol::ResponseError::try_from_code(code) {
        Some(e) => {
            let mut out = String::new();
            for (i, ch) in format!("{e:?}").chars().enumerate() {
                if ch.is_ascii_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(ch.to_ascii_uppercase());
            }
            out
        }
        None => code.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_one_help_and_type_per_family_and_escaped_labels() {
        let shard = |id: usize, topic: &str| ShardMetrics {
            shard: id,
            partitions: vec![PartitionMetrics {
                topic: topic.into(),
                partition: id as i32,
                log_start: 0,
                log_end: 10,
                high_watermark: 9,
                log_bytes: 4096,
                bytes_in: 1000,
                records_in: 10,
                bytes_out: 500,
                records_out: 5,
                under_replicated: None,
            }],
            cache_hits: 3,
            ..Default::default()
        };
        let text = render(&[shard(0, "a"), shard(1, "q\"uote")]);
        assert_eq!(
            text.matches("# TYPE sluice_partition_records_in_total counter")
                .count(),
            1
        );
        assert!(text.contains(
            "sluice_partition_records_in_total{topic=\"a\",partition=\"0\",shard=\"0\"} 10\n"
        ));
        assert!(text.contains(
            "sluice_partition_high_watermark{topic=\"q\\\"uote\",partition=\"1\",shard=\"1\"} 9\n"
        ));
        assert!(text.contains("sluice_cache_hits_total{shard=\"1\"} 3\n"));
        // Every sample line is NAME{LABELS} VALUE.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (head, v) = l.rsplit_once(' ').unwrap();
            assert!(head.ends_with('}') && v.parse::<f64>().is_ok(), "{l}");
        }
    }

    #[test]
    fn request_latency_buckets_are_cumulative_with_sum_and_count() {
        let mut m = ShardMetrics::default();
        let mut h = Histogram::latency();
        for us in [40, 40, 300, 2_000_000, 60_000_000] {
            h.record(Duration::from_micros(us));
        }
        m.requests.latency.insert(0, h);
        m.requests.counts.insert((0, 9), 5);
        let text = render(&[m.clone()]);
        let get = |needle: &str| {
            text.lines()
                .find(|l| l.starts_with(needle))
                .unwrap_or_else(|| panic!("{needle}\n{text}"))
                .rsplit_once(' ')
                .unwrap()
                .1
                .to_string()
        };
        let b = "sluice_request_latency_seconds_bucket{api=\"Produce\",shard=\"0\",le=";
        assert_eq!(get(&format!("{b}\"0.00005\"}}")), "2");
        assert_eq!(get(&format!("{b}\"0.00025\"}}")), "2");
        assert_eq!(get(&format!("{b}\"0.0005\"}}")), "3");
        assert_eq!(get(&format!("{b}\"2.5\"}}")), "4");
        assert_eq!(get(&format!("{b}\"10\"}}")), "4");
        assert_eq!(get(&format!("{b}\"+Inf\"}}")), "5");
        assert_eq!(
            get("sluice_request_latency_seconds_count{api=\"Produce\",shard=\"0\"}"),
            "5"
        );
        assert_eq!(
            get("sluice_request_latency_seconds_sum{api=\"Produce\",shard=\"0\"}"),
            "62.00038"
        );
        assert_eq!(
            get("sluice_requests_total{api=\"Produce\",version=\"9\",shard=\"0\"}"),
            "5"
        );
        // Error codes by name; the storage histograms in the same form.
        m.requests.errors.insert((0, 29), 2);
        m.storage_histograms.commit_appends.record_value(3);
        let text = render(&[m]);
        assert!(text.contains(
            "sluice_request_errors_total{api=\"Produce\",error=\"TOPIC_AUTHORIZATION_FAILED\",shard=\"0\"} 2\n"
        ), "{text}");
        assert!(
            text.contains("sluice_storage_group_commit_appends_bucket{shard=\"0\",le=\"4\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("sluice_storage_fdatasync_seconds_count{shard=\"0\"} 0\n"));
    }

    #[test]
    fn every_error_code_of_an_answer_is_counted() {
        use kafka_protocol::messages::produce_response::*;
        use kafka_protocol::messages::*;
        let p = |code| PartitionProduceResponse::default().with_error_code(code);
        let r = ProduceResponse::default().with_responses(vec![
            TopicProduceResponse::default().with_partition_responses(vec![p(0), p(29), p(3)]),
            TopicProduceResponse::default().with_partition_responses(vec![p(29)]),
        ]);
        assert_eq!(error_codes(&ResponseKind::Produce(r)), [0, 29, 3, 29]);
        let h = HeartbeatResponse::default().with_error_code(30);
        assert_eq!(error_codes(&ResponseKind::Heartbeat(h)), [30]);
    }

    /// Every metric the Grafana dashboard in the repository queries is
    /// one `/metrics` exposes.
    #[test]
    fn the_dashboard_queries_only_exposed_metrics() {
        let dashboard = include_str!("../../tuning/deploy/grafana-dashboard.json");
        let mut m = ShardMetrics {
            partitions: vec![PartitionMetrics {
                topic: "t".into(),
                partition: 0,
                log_start: 0,
                log_end: 1,
                high_watermark: 1,
                log_bytes: 1,
                bytes_in: 1,
                records_in: 1,
                bytes_out: 1,
                records_out: 1,
                under_replicated: Some(false),
            }],
            committed: vec![("g".into(), "t".into(), 0, 0)],
            ..Default::default()
        };
        m.requests.counts.insert((0, 9), 1);
        m.requests.latency.insert(0, Histogram::latency());
        let text = render(&[m]);
        let mut used = 0;
        for (at, _) in dashboard.match_indices("sluice_") {
            let name: String = dashboard[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            assert!(
                text.contains(&format!("\n{name}{{")) || text.contains(&format!("# TYPE {name} ")),
                "the dashboard queries {name}, which /metrics does not expose"
            );
            used += 1;
        }
        assert!(used > 10, "{used}");
    }

    #[test]
    fn under_replicated_is_a_led_partition_with_a_replica_out_of_its_isr() {
        let role = |leader: bool, isr: &[i32]| crate::metadata::Role {
            leader,
            leader_id: 1,
            leader_epoch: 1,
            partition_epoch: 1,
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
        };
        assert_eq!(under_replicated(&role(true, &[1, 2, 3])), Some(false));
        assert_eq!(under_replicated(&role(true, &[3, 1])), Some(true));
        assert_eq!(under_replicated(&role(false, &[1])), None);
    }
}

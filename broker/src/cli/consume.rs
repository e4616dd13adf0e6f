//! `sluice consume TOPIC`: from the beginning, the end, an offset, a time
//! or a group's committed offsets, until the end of every partition as it
//! was at the start (or `--count` messages), printed through a `--format`
//! template like kcat's: %t topic, %p partition, %o offset, %k key,
//! %s value, %T timestamp, \n newline, \t tab.

use std::io::Write;

use kafka_protocol::messages::*;
use kafka_protocol::records::RecordBatchDecoder;

use super::topic::{offsets, partitions, topic_name};
use super::{check, connect, CliError, Common, Result};

#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    pub topic: String,
    /// beginning, end, or an offset.
    #[arg(long, default_value = "beginning")]
    pub from: String,
    /// Start at the first message at or after this time (ms since epoch).
    #[arg(long)]
    pub timestamp: Option<i64>,
    /// Start at this group's committed offsets.
    #[arg(long)]
    pub group: Option<String>,
    /// With --group: commit what was consumed.
    #[arg(long)]
    pub commit: bool,
    /// Stop after this many messages.
    #[arg(long)]
    pub count: Option<usize>,
    #[arg(long, default_value = "%s\\n")]
    pub format: String,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Renders one message through the template.
pub fn render(
    fmt: &str,
    topic: &str,
    p: i32,
    o: i64,
    ts: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> String {
    let mut out = String::new();
    let mut chars = fmt.chars().peekable();
    while let Some(ch) = chars.next() {
        match (ch, chars.peek().copied()) {
            ('%', Some(k)) => {
                chars.next();
                match k {
                    't' => out.push_str(topic),
                    'p' => out.push_str(&p.to_string()),
                    'o' => out.push_str(&o.to_string()),
                    'T' => out.push_str(&ts.to_string()),
                    'k' => out.push_str(&String::from_utf8_lossy(key.unwrap_or_default())),
                    's' => out.push_str(&String::from_utf8_lossy(value.unwrap_or_default())),
                    '%' => out.push('%'),
                    other => {
                        out.push('%');
                        out.push(other);
                    }
                }
            }
            ('\\', Some('n')) => {
                chars.next();
                out.push('\n');
            }
            ('\\', Some('t')) => {
                chars.next();
                out.push('\t');
            }
            (c, _) => out.push(c),
        }
    }
    out
}

pub fn run(a: ConsumeArgs, common: &Common, out: &mut impl Write) -> Result<String> {
    let mut c = connect(common)?;
    let count = match partitions(&mut c, std::slice::from_ref(&a.topic))?.first() {
        Some((_, n, 0)) if *n > 0 => *n,
        _ => return Err(CliError::Refused(format!("no topic {}", a.topic))),
    };
    let start = offsets(&mut c, &a.topic, count, -2)?;
    let end = offsets(&mut c, &a.topic, count, -1)?;
    let mut pos: Vec<i64> = if let Some(g) = &a.group {
        let committed = super::group::committed(&mut c, g, &a.topic, count)?;
        committed
            .iter()
            .zip(&start)
            .map(|(&c, &s)| if c >= 0 { c } else { s })
            .collect()
    } else if let Some(ts) = a.timestamp {
        offsets(&mut c, &a.topic, count, ts)?
            .iter()
            .zip(&end)
            .map(|(&o, &e)| if o >= 0 { o } else { e })
            .collect()
    } else {
        match a.from.as_str() {
            "beginning" => start.clone(),
            "end" => end.clone(),
            n => {
                let n: i64 = n.parse().map_err(|_| {
                    CliError::Usage(format!(
                        "--from {n:?}: expected beginning, end or an offset"
                    ))
                })?;
                start
                    .iter()
                    .zip(&end)
                    .map(|(&s, &e)| n.clamp(s, e))
                    .collect()
            }
        }
    };
    let mut printed = 0usize;
    let limit = a.count.unwrap_or(usize::MAX);
    let mut leaders = super::Leaders::of(&mut c, &a.topic)?;
    // One fetch per leader node a round, of the partitions it leads.
    let mut nodes: Vec<i32> = (0..count as usize).map(|p| leaders.leader(p)).collect();
    nodes.sort_unstable();
    nodes.dedup();
    let mut round = 0usize;
    while printed < limit && pos.iter().zip(&end).any(|(p, e)| p < e) {
        let node = nodes[round % nodes.len()];
        round += 1;
        let mine: Vec<i32> = (0..count)
            .filter(|&p| leaders.leader(p as usize) == node && pos[p as usize] < end[p as usize])
            .collect();
        if mine.is_empty() {
            continue;
        }
        let fc = leaders.client(&mut c, node)?;
        let (_, r): (i16, FetchResponse) = fc.call(ApiKey::Fetch, (4, 12), |_| {
            FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(500)
                .with_min_bytes(1)
                .with_max_bytes(16 << 20)
                .with_topics(vec![fetch_request::FetchTopic::default()
                    .with_topic(topic_name(&a.topic))
                    .with_partitions(
                        mine.iter()
                            .map(|&p| {
                                fetch_request::FetchPartition::default()
                                    .with_partition(p)
                                    .with_fetch_offset(pos[p as usize])
                                    .with_partition_max_bytes(1 << 20)
                            })
                            .collect(),
                    )])
        })?;
        for t in r.responses {
            for p in t.partitions {
                check(
                    p.error_code,
                    &format!("fetch {}-{}", a.topic, p.partition_index),
                    None,
                )?;
                let i = p.partition_index as usize;
                let mut bytes = p.records.unwrap_or_default();
                while !bytes.is_empty() && printed < limit {
                    let set = RecordBatchDecoder::decode(&mut bytes).map_err(|e| {
                        CliError::Refused(format!("records of {}-{i}: {e}", a.topic))
                    })?;
                    for rec in set.records {
                        if rec.offset < pos[i]
                            || rec.offset >= end[i]
                            || rec.control
                            || printed >= limit
                        {
                            continue;
                        }
                        let line = render(
                            &a.format,
                            &a.topic,
                            i as i32,
                            rec.offset,
                            rec.timestamp,
                            rec.key.as_deref(),
                            rec.value.as_deref(),
                        );
                        out.write_all(line.as_bytes())
                            .map_err(|e| CliError::Refused(format!("writing: {e}")))?;
                        pos[i] = rec.offset + 1;
                        printed += 1;
                    }
                }
            }
        }
    }
    if let (Some(g), true) = (&a.group, a.commit) {
        super::group::commit(&mut c, g, &a.topic, &pos)?;
    }
    Ok(if common.json {
        serde_json::json!({"topic": a.topic, "consumed": printed}).to_string() + "\n"
    } else {
        String::new()
    })
}

#[cfg(test)]
mod tests {
    /// Every template field renders.
    #[test]
    fn templates() {
        let s = super::render(
            "%t/%p@%o %k=%s %T%%\\t|\\n",
            "t",
            3,
            42,
            7,
            Some(b"k"),
            Some(b"v"),
        );
        assert_eq!(s, "t/3@42 k=v 7%\t|\n");
    }
}

//! `sluice produce TOPIC`: one message per stdin line, optionally
//! `key<SEP>value`; acks=all. Keyed messages go to the partition the key's
//! hash picks (CRC-32C, not Java's murmur2), others round-robin.

use std::io::BufRead;

use kafka_protocol::messages::*;
use serde_json::json;
use sluice_storage::batch::build;

use super::topic::{partitions_creating, topic_name};
use super::{check, connect, CliError, Common, Result};

/// A key (if any) and a value.
type Message = (Option<Vec<u8>>, Vec<u8>);

#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    pub topic: String,
    /// Split each line into key and value at the first occurrence.
    #[arg(long)]
    pub key_separator: Option<String>,
    /// Lines per request per partition.
    #[arg(long, default_value_t = 1000)]
    pub batch_lines: usize,
}

pub fn run(a: ProduceArgs, common: &Common, input: impl BufRead) -> Result<String> {
    let mut c = connect(common)?;
    let count = match partitions_creating(&mut c, std::slice::from_ref(&a.topic))?.first() {
        Some((_, n, 0)) if *n > 0 => *n,
        Some((_, _, code)) => {
            return Err(CliError::Refused(format!(
                "topic {}: {}",
                a.topic,
                super::error_name(*code)
            )))
        }
        None => return Err(CliError::Refused(format!("no topic {}", a.topic))),
    };
    let mut leaders = super::Leaders::of(&mut c, &a.topic)?;
    let mut pending: Vec<Vec<Message>> = vec![Vec::new(); count as usize];
    let (mut sent, mut next) = (0usize, 0usize);
    let now = super::consume::now_ms();
    let mut flush =
        |c: &mut sluice_net::client::Client, p: usize, msgs: &mut Vec<Message>| -> Result<()> {
            if msgs.is_empty() {
                return Ok(());
            }
            // Each partition to its leader.
            let c = leaders.client(c, leaders.leader(p))?;
            let records: Vec<build::Record<'_>> = msgs
                .iter()
                .map(|(k, v)| build::Record {
                    key: k.as_deref(),
                    value: v,
                    timestamp: now,
                })
                .collect();
            let batch = build::batch(&records);
            let (_, r): (i16, ProduceResponse) = c.call(ApiKey::Produce, (3, 9), |_| {
                ProduceRequest::default()
                    .with_acks(-1)
                    .with_timeout_ms(30_000)
                    .with_topic_data(vec![produce_request::TopicProduceData::default()
                        .with_name(topic_name(&a.topic))
                        .with_partition_data(vec![
                            produce_request::PartitionProduceData::default()
                                .with_index(p as i32)
                                .with_records(Some(batch)),
                        ])])
            })?;
            let pr = &r.responses[0].partition_responses[0];
            check(
                pr.error_code,
                &format!("produce to {}-{p}", a.topic),
                pr.error_message.as_deref(),
            )?;
            msgs.clear();
            Ok(())
        };
    for line in input.lines() {
        let line = line.map_err(|e| CliError::Refused(format!("reading stdin: {e}")))?;
        let (key, value) = match &a.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(k.as_bytes().to_vec()), v.as_bytes().to_vec()),
                None => (None, line.into_bytes()),
            },
            None => (None, line.into_bytes()),
        };
        let p = match &key {
            Some(k) => crc32c::crc32c(k) as usize % count as usize,
            None => {
                next += 1;
                next % count as usize
            }
        };
        pending[p].push((key, value));
        sent += 1;
        if pending[p].len() >= a.batch_lines.max(1) {
            let mut msgs = std::mem::take(&mut pending[p]);
            flush(&mut c, p, &mut msgs)?;
        }
    }
    for (p, msgs) in pending.iter_mut().enumerate() {
        flush(&mut c, p, msgs)?;
    }
    Ok(if common.json {
        json!({"topic": a.topic, "produced": sent}).to_string() + "\n"
    } else {
        format!("produced {sent} message(s) to {}\n", a.topic)
    })
}

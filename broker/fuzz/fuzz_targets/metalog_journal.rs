//! Fuzzes the replay of a node's metadata-log journal: arbitrary bytes,
//! or batches with good checksums around arbitrary records (so the record
//! parser and the log checks are reached), replay to a store or an error,
//! never a panic; a store that replays opens as a node and polls.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_broker::cluster::journal::replay;
use sluice_broker::cluster::metalog::{Metalog, MetalogConfig};

/// The input cut into batches, each with a correct length and checksum.
fn framed(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in data.split(|&b| b == 0xB5) {
        if chunk.is_empty() {
            continue;
        }
        out.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(chunk).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let journal = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        framed(rest)
    };
    let Ok(r) = replay(&journal) else {
        return;
    };
    assert!(r.intact_bytes <= journal.len());
    if r.intact_bytes == 0 {
        return;
    }
    let voters = r.store.voters().to_vec();
    let cfg = MetalogConfig {
        node_id: voters[0],
        voters,
        election_ticks: 10,
        heartbeat_ticks: 2,
        election_ticks_range: None,
    };
    if let Ok(mut o) = Metalog::open(&cfg, &journal) {
        for _ in 0..30 {
            o.metalog.tick();
            let _ = o.metalog.poll();
        }
    }
});

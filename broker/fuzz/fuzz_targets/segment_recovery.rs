//! Fuzzes segment recovery: a partition directory whose segment holds
//! arbitrary bytes (or real batches damaged where the input says) opens
//! without a panic, serves only whole, CRC-valid batches in offset order,
//! and takes the next append at its log end.
#![no_main]

use std::rc::Rc;

use libfuzzer_sys::fuzz_target;
use sluice_storage::batch::build;
use sluice_storage::{LogConfig, ManualClock, PartitionLog, ShardCache};

thread_local! {
    static EX: glommio::LocalExecutor = sluice_storage::runtime::executor_builder(
        glommio::Placement::Unbound,
        256 * 1024,
        std::time::Duration::ZERO,
    )
    .make()
    .expect("executor");
}

/// Real batches, then the input's edits: (position, byte) pairs and a cut.
fn damaged(data: &[u8]) -> Vec<u8> {
    let mut seg = Vec::new();
    let n = 1 + (data.first().copied().unwrap_or(0) % 8) as usize;
    let mut base = 0i64;
    for i in 0..n {
        let mut b = build::uniform(1 + i % 3, 40 + i * 7, 1_700_000_000_000 + i as i64).to_vec();
        b[..8].copy_from_slice(&base.to_be_bytes());
        base += (1 + i % 3) as i64;
        seg.extend_from_slice(&b);
    }
    let edits = &data[1.min(data.len())..];
    for e in edits.chunks_exact(3) {
        let at = u16::from_be_bytes([e[0], e[1]]) as usize;
        if at < seg.len() {
            seg[at] = e[2];
        } else if at % 7 == 0 {
            seg.truncate(at % (seg.len() + 1));
        }
    }
    seg
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let seg = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        damaged(rest)
    };
    let dir = tempfile::Builder::new()
        .prefix("sluice-fuzz-")
        .tempdir_in(std::env::var("SLUICE_FUZZ_DIR").unwrap_or_else(|_| ".".into()))
        .unwrap();
    std::fs::write(dir.path().join(format!("{:020}.log", 0)), &seg).unwrap();
    let path = dir.path().to_path_buf();
    EX.with(|ex| {
        ex.run(async move {
            let cache = ShardCache::new(1 << 20);
            let clock = Rc::new(ManualClock::new(1_700_000_000_000));
            let cfg = LogConfig {
                segment_bytes: 1 << 20,
                ..LogConfig::default()
            };
            let Ok(log) = PartitionLog::open(&path, cfg, &cache, clock).await else {
                return;
            };
            let end = log.log_end_offset();
            let mut at = log.log_start_offset();
            while at < end {
                let got = log
                    .read(at, 64 * 1024)
                    .await
                    .expect("a recovered log reads");
                let Some(last) = got.last() else { break };
                for b in &got {
                    assert!(b.crc_ok(), "a served batch is whole");
                    assert!(b.base_offset() <= at.max(b.base_offset()));
                }
                assert!(last.next_offset() > at, "reads advance");
                at = last.next_offset();
            }
            assert!(at <= end, "nothing is served past the log end");
            let info = log
                .append(build::uniform(2, 10, 1_700_000_000_001))
                .await
                .expect("a recovered log appends");
            assert_eq!(
                info.base_offset, end,
                "the next append lands at the log end"
            );
            log.close().await.expect("close");
        })
    });
});

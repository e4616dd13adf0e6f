//! Fuzzes the replay of a group coordinator's committed-offsets log: a
//! log whose batches carry arbitrary keys and values (well-framed
//! batches, so the replay itself is reached, or raw bytes) opens without
//! a panic, and a commit after it is kept.
#![no_main]

use std::rc::Rc;

use libfuzzer_sys::fuzz_target;
use sluice_broker::groups::offsets::{Committed, OffsetKey, OffsetStore};
use sluice_storage::batch::build::{self, Record};
use sluice_storage::ShardCache;

thread_local! {
    static EX: glommio::LocalExecutor = sluice_storage::runtime::executor_builder(
        glommio::Placement::Unbound,
        256 * 1024,
        std::time::Duration::ZERO,
    )
    .make()
    .expect("executor");
}

/// Batches of records whose keys and values are cut from the input.
fn records_log(data: &[u8]) -> Vec<u8> {
    let mut seg = Vec::new();
    let mut base = 0i64;
    for chunk in data.chunks(96) {
        let split = chunk.first().map_or(0, |&b| b as usize % (chunk.len() + 1));
        let (k, v) = chunk.split_at(split);
        let recs = [Record {
            key: Some(k),
            value: v,
            timestamp: 1_700_000_000_000,
        }];
        let mut b = build::batch(&recs).to_vec();
        b[..8].copy_from_slice(&base.to_be_bytes());
        base += 1;
        seg.extend_from_slice(&b);
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
        records_log(rest)
    };
    let dir = tempfile::Builder::new()
        .prefix("sluice-fuzz-")
        .tempdir_in(std::env::var("SLUICE_FUZZ_DIR").unwrap_or_else(|_| ".".into()))
        .unwrap();
    std::fs::write(dir.path().join(format!("{:020}.log", 0)), &seg).unwrap();
    let path = dir.path().to_path_buf();
    EX.with(|ex| {
        ex.run(async move {
            let cache: Rc<ShardCache> = ShardCache::new(1 << 20);
            let Ok(store) = OffsetStore::open(&path, &cache, 1 << 20, 1 << 30).await else {
                return;
            };
            let key: OffsetKey = ("g".into(), "t".into(), 0);
            let c = Committed {
                offset: 7,
                leader_epoch: -1,
                metadata: None,
                commit_time_ms: 1,
            };
            store
                .commit(vec![(key.clone(), Some(c.clone()))])
                .await
                .expect("a commit after replay");
            assert_eq!(store.get(&key).map(|c| c.offset), Some(7));
            store.close().await.expect("close");
        })
    });
});

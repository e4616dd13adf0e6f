//! Crash and damage tests: cut the last segment at every byte boundary of
//! its last batches, flip bits inside batches, delete or damage the index
//! files; after reopening, every whole batch before the damage is there,
//! nothing corrupt is served, and appends continue at the right offset.

mod common;

use std::path::{Path, PathBuf};
use std::rc::Rc;

use common::*;
use sluice_storage::{LogConfig, ManualClock, ShardCache, StorageError};

struct Written {
    /// (base, last, stored bytes, max timestamp, position, length) per batch.
    batches: Vec<(i64, i64, Vec<u8>, i64)>,
    files: Vec<(PathBuf, Vec<u8>)>,
}

fn cfg(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        ..small_config()
    }
}

/// Writes `n` batches durably, closes the log and returns the files.
fn write_log(dir: &Path, n: usize, segment_bytes: u64, seed: u64) -> Written {
    let dir = dir.to_path_buf();
    run(move || async move {
        let mut rng = Rng(seed);
        let clock = Rc::new(ManualClock::new(1_000_000));
        let cache = ShardCache::new(1 << 20);
        let log = open(&dir, cfg(segment_bytes), &cache, &clock).await;
        let mut batches = Vec::new();
        for i in 0..n {
            let count = rng.range(1, 5) as usize;
            let ts: Vec<i64> = (0..count)
                .map(|k| 1_000_000 + (i * 10 + k) as i64)
                .collect();
            let b = random_batch(&mut rng, &ts, 150);
            let info = log.append(b).await.unwrap();
            batches.push((
                info.base_offset,
                info.last_offset,
                Vec::new(),
                *ts.last().unwrap(),
            ));
        }
        log.sync().await.unwrap();
        let all = read_all(&log, 0).await;
        for (b, got) in batches.iter_mut().zip(&all) {
            b.2 = got.to_vec();
        }
        log.close().await.unwrap();
        let mut files = Vec::new();
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            // These tests damage what a crash leaves, and a crash leaves
            // no clean-shutdown mark (with one, the tail is trusted and
            // damage there shows only when it is read).
            if p.ends_with(sluice_storage::CLEAN_SHUTDOWN_FILE) {
                continue;
            }
            files.push((p.clone(), std::fs::read(&p).unwrap()));
        }
        files.sort();
        Written { batches, files }
    })
}

fn restore(w: &Written, dir: &Path, edit: impl Fn(&Path, &mut Vec<u8>) -> bool) {
    for e in std::fs::read_dir(dir).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    for (p, bytes) in &w.files {
        let mut b = bytes.clone();
        let name = p.file_name().unwrap();
        if edit(Path::new(name), &mut b) {
            std::fs::write(dir.join(name), b).unwrap();
        }
    }
}

/// Opens the damaged log and checks what it serves against the original:
/// every batch read is byte-identical or an error, never different bytes.
/// Returns (log end offset, batches served, read errors seen).
async fn reopen_and_check(dir: &Path, w: &Written, segment_bytes: u64) -> (i64, usize, usize) {
    let clock = Rc::new(ManualClock::new(2_000_000));
    let cache = ShardCache::new(0); // no cache: every read goes to disk
    let log = open(dir, cfg(segment_bytes), &cache, &clock).await;
    let end = log.log_end_offset();
    let mut served = 0;
    let mut errors = 0;
    for (base, _, bytes, _) in &w.batches {
        if *base >= end {
            break;
        }
        match log.read(*base, 1).await {
            Ok(got) => {
                assert_eq!(got.len(), 1);
                assert_eq!(
                    &got[0].to_vec(),
                    bytes,
                    "batch {base} served different bytes"
                );
                served += 1;
            }
            Err(StorageError::CorruptData { .. }) => errors += 1,
            Err(e) => panic!("batch {base}: unexpected error {e}"),
        }
    }
    // Appends continue at the recovered end, and read back.
    let mut rng = Rng(end as u64);
    let b = random_batch(&mut rng, &[3_000_000, 3_000_001], 40);
    let info = log.append(b.clone()).await.unwrap();
    assert_eq!(
        info.base_offset, end,
        "append after recovery continues at the end"
    );
    log.wait_durable(info.last_offset).await.unwrap();
    let back = log.read(end, 1 << 20).await.unwrap();
    assert_eq!(back[0].base_offset(), end);
    assert_eq!(&back[0].to_vec()[61..], &b[61..]);
    log.close().await.unwrap();
    drop(log);
    // A second recovery finds the new batch right after the survivors: the
    // damaged bytes were really cut, not left in the file.
    let log = open(dir, cfg(segment_bytes), &cache, &clock).await;
    assert_eq!(
        log.log_end_offset(),
        info.last_offset + 1,
        "end after second reopen"
    );
    let again = log
        .read(end, 1 << 20)
        .await
        .expect("appended batch reads from disk");
    assert_eq!(&again[0].to_vec()[61..], &b[61..]);
    log.close().await.unwrap();
    (end, served, errors)
}

fn last_segment_name(w: &Written) -> String {
    w.files
        .iter()
        .filter_map(|(p, _)| p.file_name()?.to_str().map(String::from))
        .filter(|n| n.ends_with(".log"))
        .max()
        .unwrap()
}

#[test]
fn cut_last_segment_at_every_byte_of_its_last_batches() {
    let seed = seed();
    println!("seed {seed}");
    let dir = tempdir();
    let w = write_log(dir.path(), 12, 1 << 20, seed);
    let seg = last_segment_name(&w);
    let total: usize = w.batches.iter().map(|b| b.2.len()).sum();
    let last3: usize = w.batches.iter().rev().take(3).map(|b| b.2.len()).sum();
    let dir2 = tempdir();
    let path = dir2.path().to_path_buf();
    let w = Rc::new(w);
    for cut in (total - last3)..=total {
        let seg = seg.clone();
        restore(&w, &path, |name, b| {
            if name.to_str() == Some(seg.as_str()) {
                b.truncate(cut);
            }
            true
        });
        let (p, w2) = (path.clone(), w.clone());
        let (end, served, errors) =
            run(move || async move { reopen_and_check(&p, &w2, 1 << 20).await });
        // The batches wholly before the cut survive; the cut one is gone.
        let mut pos = 0;
        let mut expect_end = 0;
        for (base, last, bytes, _) in w.batches.iter() {
            pos += bytes.len();
            if pos <= cut {
                expect_end = last + 1;
            } else {
                assert!(*base >= expect_end);
                break;
            }
        }
        assert_eq!(end, expect_end, "cut at {cut}: recovered end");
        assert_eq!(errors, 0, "cut at {cut}: a surviving batch failed to read");
        assert_eq!(
            served as i64,
            w.batches.iter().filter(|b| b.1 < end).count() as i64
        );
    }
}

#[test]
fn flipped_bits_are_never_served() {
    let seed = seed();
    println!("seed {seed}");
    let dir = tempdir();
    // Several segments, so damage lands in sealed segments and in the tail.
    let w = Rc::new(write_log(dir.path(), 40, 8 * 1024, seed));
    let logs: Vec<String> = w
        .files
        .iter()
        .filter_map(|(p, _)| p.file_name()?.to_str().map(String::from))
        .filter(|n| n.ends_with(".log"))
        .collect();
    let dir2 = tempdir();
    let path = dir2.path().to_path_buf();
    let mut rng = Rng(seed);
    let mut total_errors = 0;
    for round in 0..40 {
        let target = logs[rng.below(logs.len() as u64) as usize].clone();
        let len = w
            .files
            .iter()
            .find(|(p, _)| p.ends_with(&target))
            .unwrap()
            .1
            .len();
        // Any byte but the leader epoch (bytes 12..16 of a batch), which the
        // v2 format leaves outside every checksum.
        let at = rng.below(len as u64) as usize;
        let bit = rng.below(8);
        let flipped = restore_flip(&w, &path, &target, at, bit);
        println!("round {round}: flip {target}:{at} bit {bit}");
        let (p, w2) = (path.clone(), w.clone());
        let (end, served, errors) =
            run(move || async move { reopen_and_check(&p, &w2, 8 * 1024).await });
        if !flipped {
            continue;
        }
        total_errors += errors;
        // The damaged batch is either cut away (tail) or reported as corrupt:
        // not everything can come back intact.
        let all = w.batches.len();
        assert!(
            served < all || end < w.batches.last().unwrap().1 + 1,
            "round {round}: flip at {target}:{at} went unnoticed"
        );
    }
    println!("read errors reported across rounds: {total_errors}");
}

/// Restores the log with one bit flipped; returns false when the byte was
/// part of a leader epoch field (not covered by any checksum) and left alone.
fn restore_flip(w: &Written, dir: &Path, target: &str, at: usize, bit: u64) -> bool {
    let bytes = &w.files.iter().find(|(p, _)| p.ends_with(target)).unwrap().1;
    let mut pos = 0usize;
    let mut in_epoch = false;
    while pos + 12 <= bytes.len() {
        let len = i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().unwrap()) as usize + 12;
        if (pos + 12..pos + 16).contains(&at) {
            in_epoch = true;
        }
        pos += len;
    }
    restore(w, dir, |name, b| {
        if name.to_str() == Some(target) && !in_epoch {
            b[at] ^= 1 << bit;
        }
        true
    });
    !in_epoch
}

#[test]
fn damaged_or_missing_indexes_are_rebuilt() {
    let seed = seed();
    println!("seed {seed}");
    let dir = tempdir();
    let w = Rc::new(write_log(dir.path(), 60, 8 * 1024, seed));
    let dir2 = tempdir();
    let path = dir2.path().to_path_buf();
    type Damage = fn(&Path, &mut Vec<u8>) -> bool;
    let damages: Vec<(&str, Damage)> = vec![
        ("delete offset indexes", |n, _| {
            !n.to_str().unwrap().ends_with(".index")
        }),
        ("delete time indexes", |n, _| {
            !n.to_str().unwrap().ends_with(".timeindex")
        }),
        ("delete all indexes", |n, _| {
            n.to_str().unwrap().ends_with(".log")
        }),
        ("halve indexes", |n, b| {
            if !n.to_str().unwrap().ends_with(".log") {
                b.truncate(b.len() / 2);
            }
            true
        }),
        ("garbage indexes", |n, b| {
            if !n.to_str().unwrap().ends_with(".log") {
                let mut r = Rng(b.len() as u64);
                b.iter_mut().for_each(|x| *x = r.next() as u8);
            }
            true
        }),
        ("zeroed indexes", |n, b| {
            if !n.to_str().unwrap().ends_with(".log") {
                b.iter_mut().for_each(|x| *x = 0);
            }
            true
        }),
        ("shifted positions", |n, b| {
            // Still increasing, but pointing into the middle of batches.
            if n.to_str().unwrap().ends_with(".index") {
                for e in b.chunks_exact_mut(8) {
                    let p = u32::from_be_bytes(e[4..8].try_into().unwrap());
                    e[4..8].copy_from_slice(&(p + 7).to_be_bytes());
                }
            }
            true
        }),
    ];
    for (what, damage) in damages {
        restore(&w, &path, damage);
        let (p, w2) = (path.clone(), w.clone());
        run(move || async move {
            let clock = Rc::new(ManualClock::new(2_000_000));
            let cache = ShardCache::new(0);
            let log = open(&p, cfg(8 * 1024), &cache, &clock).await;
            assert_eq!(
                log.log_end_offset(),
                w2.batches.last().unwrap().1 + 1,
                "{what}: end"
            );
            let all = read_all(&log, 0).await;
            assert_eq!(all.len(), w2.batches.len(), "{what}: batch count");
            for (b, (_, _, bytes, _)) in all.iter().zip(w2.batches.iter()) {
                assert_eq!(&b.to_vec(), bytes, "{what}: bytes of {}", b.base_offset());
            }
            for (i, (base, _, _, _)) in w2.batches.iter().enumerate().step_by(3) {
                let ts = 1_000_000 + (i * 10) as i64;
                assert_eq!(
                    log.offset_for_timestamp(ts).await.unwrap(),
                    Some(*base),
                    "{what}: time {ts}"
                );
                let got = log.read(*base, 1).await.unwrap();
                assert_eq!(got[0].base_offset(), *base, "{what}: read {base}");
            }
            log.close().await.unwrap();
        });
    }
}

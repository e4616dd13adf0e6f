//! `sluice iotune --dir DIR`: measures the disk under DIR with the log's
//! own DMA files, prints the figures, and writes the io-properties file
//! `sluice serve` reads from that directory.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use sluice_storage::iotune;
use sluice_tuning::io_properties;

use super::table;

#[derive(Debug, clap::Args)]
pub struct IotuneArgs {
    /// The directory to measure (the data directory); created if missing.
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "./sluice-data")]
    pub dir: PathBuf,
    /// About how long to measure (30s, 1m).
    #[arg(long, default_value = "45s", value_parser = sluice_loadgen::args::parse_duration)]
    pub duration: Duration,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Scheduling of the io_uring workers that run the measured extending
    /// writes and fdatasyncs, as `sluice serve --io-worker-priority`
    /// (realtime by default, as the broker runs them).
    #[arg(
        long,
        env = "SLUICE_IO_WORKER_PRIORITY",
        value_enum,
        default_value = "realtime"
    )]
    pub io_worker_priority: crate::config::IoWorkerPriority,
    /// Measure pinned to this CPU, as a shard runs (by default unpinned).
    /// A pinned executor's io_uring workers share its CPU, as a shard's
    /// do, which changes what an fdatasync through io_uring costs.
    #[arg(long)]
    pub cpu: Option<usize>,
}

pub fn run(a: IotuneArgs) -> ExitCode {
    if let Err(e) = std::fs::create_dir_all(&a.dir) {
        eprintln!("sluice iotune: {}: {e}", a.dir.display());
        return ExitCode::from(1);
    }
    let memlock = sluice_tuning::host::raise_memlock_limit();
    let Some(io_memory) = sluice_tuning::host::io_memory_per_executor(memlock, 1) else {
        eprintln!(
            "sluice iotune: the locked-memory limit is too small for io_uring (see sluice tune)"
        );
        return ExitCode::from(1);
    };
    let (dir, budget, quiet) = (a.dir.clone(), a.duration, a.json);
    // The workers run as the broker's do, so the figures (and the sync
    // latency written for serve) are what a shard waits for.
    let promoter = crate::serve::IoWorkerPromoter::for_priority(a.io_worker_priority);
    // Polled like a shard (the broker's default idle poll), so completions
    // are seen as a shard would see them.
    let idle_poll = Duration::from_micros(sluice_tuning::limits::IDLE_POLL_US_DEFAULT);
    let allowed = sluice_tuning::host::allowed_cpus();
    let cpu = match a.cpu {
        Some(c) if !allowed.contains(&c) => {
            eprintln!("sluice iotune: --cpu {c}: this process may run on CPUs {allowed:?} only");
            return ExitCode::from(2);
        }
        c => c,
    };
    let placement = cpu.map_or(glommio::Placement::Unbound, glommio::Placement::Fixed);
    let r = sluice_storage::runtime::executor_builder(placement, io_memory, idle_poll)
        .name("sluice-iotune")
        .spawn(move || async move {
            iotune::measure(&dir, budget, |what| {
                if !quiet {
                    eprintln!("iotune: {what}");
                }
            })
            .await
        })
        .map_err(|e| e.to_string())
        .and_then(|h| h.join().map_err(|e| e.to_string()))
        .and_then(|r| r.map_err(|e| e.to_string()));
    if let Some(p) = promoter {
        p.stop();
    }
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice iotune: {}: {e}", a.dir.display());
            return ExitCode::from(1);
        }
    };
    let props = r.properties();
    let path = io_properties::path_in(&a.dir);
    if let Err(e) = std::fs::write(&path, props.to_toml()) {
        eprintln!("sluice iotune: cannot write {}: {e}", path.display());
        return ExitCode::from(1);
    }
    if a.json {
        let v = serde_json::json!({
            "dir": a.dir,
            "seconds": r.seconds,
            "seq_write": r.seq_write,
            "fdatasync": r.fdatasync,
            "seq_read_bytes_per_sec": r.seq_read_bytes_per_sec,
            "rand_read_4k_iops": r.rand_read_4k_iops,
            "properties": {
                "file": path,
                "write_chunk_bytes": props.write_chunk_bytes,
                "queue_depth": props.queue_depth,
                "sync_latency_us": props.sync_latency_us,
                "write_bytes_per_sec": props.write_bytes_per_sec,
                "read_bytes_per_sec": props.read_bytes_per_sec,
            },
        });
        println!("{v}");
        return ExitCode::SUCCESS;
    }
    let mb = |b: f64| format!("{:.0}", b / 1e6);
    let rows: Vec<Vec<String>> = r
        .seq_write
        .iter()
        .map(|p| {
            vec![
                format!("{} KiB", p.block_bytes >> 10),
                p.depth.to_string(),
                mb(p.write_bytes_per_sec),
                p.latency_p50_us.to_string(),
                p.latency_p99_us.to_string(),
            ]
        })
        .collect();
    println!("sequential write ({:.0} s in all)", r.seconds);
    print!(
        "{}",
        table(&["BLOCK", "DEPTH", "MB/S", "P50 US", "P99 US"], &rows)
    );
    let rows: Vec<Vec<String>> = r
        .fdatasync
        .iter()
        .map(|s| {
            vec![
                format!("{} KiB", s.write_bytes >> 10),
                s.fdatasync_p50_us.to_string(),
                s.fdatasync_p99_us.to_string(),
                s.executor_fdatasync_p50_us.to_string(),
                s.executor_fdatasync_p99_us.to_string(),
                s.syscall_p50_us.to_string(),
                s.syscall_p99_us.to_string(),
            ]
        })
        .collect();
    println!(
        "\nfdatasync after a write of: the pair through io_uring, waited for in the kernel; \
         through the executor, as the log syncs (io-properties use it); as system calls"
    );
    print!(
        "{}",
        table(
            &[
                "WRITE",
                "P50 US",
                "P99 US",
                "EXECUTOR P50 US",
                "EXECUTOR P99 US",
                "SYSCALL P50 US",
                "SYSCALL P99 US"
            ],
            &rows
        )
    );
    println!(
        "\nsequential read 256 KiB x 16: {} MB/s; random read 4 KiB x 32: {:.0} IOPS",
        mb(r.seq_read_bytes_per_sec),
        r.rand_read_4k_iops
    );
    println!(
        "\nwrote {}: writes of {} KiB, {} in flight, fdatasync {} us",
        path.display(),
        props.write_chunk_bytes >> 10,
        props.queue_depth,
        props.sync_latency_us
    );
    ExitCode::SUCCESS
}

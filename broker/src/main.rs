//! `sluice`: the broker, and (in later versions) the load generator, host
//! tuner and admin CLI, as subcommands of one binary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The system allocator, plus the guard that keeps an untrusted frame's
/// bogus element counts from aborting the process (see `sluice_net::guard`).
#[global_allocator]
static ALLOC: sluice_net::guard::GuardedAlloc = sluice_net::guard::GuardedAlloc;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "A Kafka-compatible, thread-per-core streaming broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker: open and recover the data directory, then serve
    /// until SIGINT or SIGTERM.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address every shard listens on (SO_REUSEPORT).
    #[arg(long, env = "SLUICE_LISTEN", default_value = "0.0.0.0:9092")]
    listen: std::net::SocketAddr,
    /// Directory holding one sub-directory per partition.
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "./sluice-data")]
    data_dir: PathBuf,
    /// Shards (one pinned executor each); default: every online CPU.
    #[arg(long, env = "SLUICE_CORES")]
    cores: Option<usize>,
    /// Per-shard cache budget in bytes; default: a fair share of memory.
    #[arg(long, env = "SLUICE_CACHE_BYTES_MAX")]
    cache_bytes_max: Option<usize>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(a) => sluice_broker::serve::run(sluice_broker::serve::ServeConfig {
            listen: a.listen,
            data_dir: a.data_dir,
            cores: a.cores,
            cache_bytes_max: a.cache_bytes_max,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e}");
            ExitCode::from(2)
        }
    }
}

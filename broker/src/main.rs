//! `sluice`: the broker, and (in later versions) the load generator, host
//! tuner and admin CLI, as subcommands of one binary.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice_broker::cli;

/// Each shard's buffers from its own memory, set up at start (see
/// `sluice_storage::shard_heap`), over the system allocator with
/// direct-I/O buffers in huge pages (see `sluice_storage::dma_memory`),
/// plus the guard that keeps an untrusted frame's bogus element counts
/// from aborting the process (see `sluice_net::guard`).
#[global_allocator]
static ALLOC: sluice_net::guard::GuardedAlloc<
    sluice_storage::shard_heap::ShardHeap<sluice_storage::dma_memory::DmaAwareAlloc>,
> = sluice_net::guard::GuardedAlloc(sluice_storage::shard_heap::ShardHeap(
    sluice_storage::dma_memory::DmaAwareAlloc,
));

#[derive(Parser)]
#[command(
    name = "sluice",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("SLUICE_GIT_COMMIT"), ")"),
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
    Serve(sluice_broker::config::ServeArgs),
    /// Check this host for running a broker: io_uring, locked memory,
    /// limits, CPU, memory, disk and network settings; --apply changes
    /// what can be changed.
    Tune(sluice_broker::cli::tune::TuneArgs),
    /// Measure the disk under a directory with the log's own direct-I/O
    /// files and write the io-properties `sluice serve` reads from it.
    Iotune(sluice_broker::cli::iotune::IotuneArgs),
    /// Drive a Kafka-compatible broker with producers and consumers and
    /// measure throughput and latency.
    Loadgen(sluice_loadgen::args::LoadgenArgs),
    /// Create, list, describe, delete topics and alter their configs.
    Topic {
        #[command(subcommand)]
        command: cli::TopicCommand,
        #[command(flatten)]
        common: cli::Common,
    },
    /// Produce one message per stdin line.
    Produce {
        #[command(flatten)]
        args: cli::ProduceArgs,
        #[command(flatten)]
        common: cli::Common,
    },
    /// Print messages of a topic.
    Consume {
        #[command(flatten)]
        args: cli::ConsumeArgs,
        #[command(flatten)]
        common: cli::Common,
    },
    /// The cluster's nodes, controller and health.
    Cluster {
        #[command(subcommand)]
        command: cli::ClusterCommand,
        #[command(flatten)]
        common: cli::Common,
    },
    /// Create, list and delete SCRAM users (on a running broker, or in a
    /// stopped one's data directory with --data-dir).
    User {
        #[command(subcommand)]
        command: cli::UserCommand,
        #[command(flatten)]
        common: cli::Common,
    },
    /// Create, list and delete ACLs.
    Acl {
        #[command(subcommand)]
        command: cli::AclCommand,
        #[command(flatten)]
        common: cli::Common,
    },
    /// List, describe, delete groups and reset their offsets.
    Group {
        #[command(subcommand)]
        command: cli::GroupCommand,
        #[command(flatten)]
        common: cli::Common,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
                // The runtime's one message there is the failed probe that
                // `runtime::use_interrupt_ring` makes fail on purpose.
                .add_directive("glommio::reactor=off".parse().expect("a directive")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let admin = match cli.command {
        Command::Topic { command, common } => Some(cli::topic_run(command, &common)),
        Command::Produce { args, common } => Some(cli::produce_run(args, &common)),
        Command::Consume { args, common } => Some(cli::consume_run(args, &common)),
        Command::Group { command, common } => Some(cli::group_run(command, &common)),
        Command::User { command, common } => Some(cli::user_run(command, &common)),
        Command::Acl { command, common } => Some(cli::acl_run(command, &common)),
        Command::Cluster { command, common } => Some(cli::cluster_run(command, &common)),
        Command::Serve(a) => return serve(a),
        Command::Tune(a) => return sluice_broker::cli::tune::run(a),
        Command::Iotune(a) => return sluice_broker::cli::iotune::run(a),
        Command::Loadgen(a) => {
            let mut out = std::io::stdout();
            return match sluice_loadgen::run::run(a, &mut out) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sluice loadgen: {e}");
                    ExitCode::from(1)
                }
            };
        }
    };
    match admin {
        Some(Ok(out)) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Some(Err(e)) => {
            eprintln!("sluice: {e}");
            ExitCode::from(1)
        }
        None => ExitCode::SUCCESS,
    }
}

fn serve(a: sluice_broker::config::ServeArgs) -> ExitCode {
    let result = match sluice_broker::config::BrokerConfig::resolve(a) {
        Ok(cfg) => sluice_broker::serve::run(cfg),
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e}");
            ExitCode::from(2)
        }
    }
}

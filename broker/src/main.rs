//! `sluice`: the broker, and (in later versions) the load generator, host
//! tuner and admin CLI, as subcommands of one binary.

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
    Serve(sluice_broker::config::ServeArgs),
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
        Command::Serve(a) => match sluice_broker::config::BrokerConfig::resolve(a) {
            Ok(cfg) => sluice_broker::serve::run(cfg),
            Err(e) => {
                eprintln!("sluice: {e}");
                return ExitCode::from(2);
            }
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e}");
            ExitCode::from(2)
        }
    }
}

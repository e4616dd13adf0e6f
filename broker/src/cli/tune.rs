//! `sluice tune`: the host checks of `sluice_tuning::tune` as a table or
//! JSON, and the changes `--apply` makes.

use std::path::PathBuf;
use std::process::ExitCode;

use sluice_tuning::tune::{self, Root, Status};

use super::table;

#[derive(Debug, clap::Args)]
pub struct TuneArgs {
    /// The data directory whose disk and file system are checked.
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "./sluice-data")]
    pub data_dir: PathBuf,
    /// Shards the broker will run (default: every online CPU).
    #[arg(long, env = "SLUICE_CORES")]
    pub cores: Option<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Change what can be changed (needs root).
    #[arg(long)]
    pub apply: bool,
    /// With --apply: print what would change, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(a: TuneArgs) -> ExitCode {
    if let Err(e) = std::fs::create_dir_all(&a.data_dir) {
        eprintln!("sluice tune: data directory {}: {e}", a.data_dir.display());
        return ExitCode::from(1);
    }
    let shards = a.cores.unwrap_or_else(sluice_tuning::host::online_cpus);
    let mut checks = tune::all_checks(&Root::host(), &a.data_dir, shards);
    if a.apply || a.dry_run {
        for c in checks.iter_mut().filter(|c| c.status != Status::Ok) {
            if a.dry_run {
                for f in &c.fixes {
                    eprintln!(
                        "{}: would write {} to {}",
                        c.name,
                        f.value,
                        f.path.display()
                    );
                }
            } else {
                for line in tune::apply(c) {
                    eprintln!("{line}");
                }
            }
        }
    }
    if a.json {
        let list: Vec<serde_json::Value> = checks
            .iter()
            .map(|c| {
                serde_json::json!({
                    "name": c.name,
                    "current": c.current,
                    "recommended": c.recommended,
                    "status": c.status.name(),
                    "why": c.why,
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "checks": list }));
    } else {
        let rows: Vec<Vec<String>> = checks
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    c.current.clone(),
                    c.recommended.clone(),
                    c.status.name().to_string(),
                    c.why.clone(),
                ]
            })
            .collect();
        print!(
            "{}",
            table(&["CHECK", "CURRENT", "RECOMMENDED", "STATUS", "WHY"], &rows)
        );
    }
    let fatal: Vec<&str> = checks
        .iter()
        .filter(|c| c.critical && c.status == Status::Fail)
        .map(|c| c.name.as_str())
        .collect();
    if fatal.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "sluice tune: the broker cannot run here: {} failed",
            fatal.join(", ")
        );
        ExitCode::from(1)
    }
}

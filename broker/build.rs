//! Names the git commit the binary was built from, for `sluice --version`
//! and the start-up line ("unknown" outside a git checkout).

fn main() {
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| !o.stdout.is_empty());
    let suffix = if dirty { "-modified" } else { "" };
    println!("cargo:rustc-env=SLUICE_GIT_COMMIT={commit}{suffix}");
    // Rebuilt when HEAD moves (a commit, a checkout); the index changes
    // with the working tree's staged state.
    for f in ["../.git/HEAD", "../.git/index"] {
        if std::path::Path::new(f).exists() {
            println!("cargo:rerun-if-changed={f}");
        }
    }
    if let Ok(head) = std::fs::read_to_string("../.git/HEAD") {
        if let Some(r) = head.strip_prefix("ref: ") {
            let r = format!("../.git/{}", r.trim());
            if std::path::Path::new(&r).exists() {
                println!("cargo:rerun-if-changed={r}");
            }
        }
    }
}

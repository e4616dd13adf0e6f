//! `sluice tune`: checks of the host a broker runs on, each with its
//! current value, the recommended one, a status and one line of why; and
//! the changes `--apply` makes. Every check reads /proc and /sys through a
//! [`Root`], so tests run them against fixture trees.

use std::path::{Path, PathBuf};

use crate::{host, limits};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Fail,
    Changed,
    NotApplicable,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Changed => "changed",
            Status::NotApplicable => "not applicable",
        }
    }
}

/// A write `--apply` can make: `value` into `path` (a /proc or /sys file).
#[derive(Debug, Clone, PartialEq)]
pub struct Fix {
    pub path: PathBuf,
    pub value: String,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub current: String,
    pub recommended: String,
    pub status: Status,
    pub why: String,
    /// The broker cannot run while this fails.
    pub critical: bool,
    /// What `--apply` would write; none when it cannot be changed here
    /// (or needs a reboot).
    pub fixes: Vec<Fix>,
}

impl Check {
    fn new(name: &str, current: impl Into<String>, recommended: impl Into<String>) -> Check {
        Check {
            name: name.to_string(),
            current: current.into(),
            recommended: recommended.into(),
            status: Status::Ok,
            why: String::new(),
            critical: false,
            fixes: Vec::new(),
        }
    }

    fn status(mut self, status: Status, why: &str) -> Check {
        self.status = status;
        self.why = why.to_string();
        self
    }

    fn fix(mut self, path: PathBuf, value: &str) -> Check {
        self.fixes.push(Fix {
            path,
            value: value.to_string(),
        });
        self
    }
}

/// Where /proc and /sys are (`/` on a host; a fixture tree in tests).
#[derive(Debug, Clone)]
pub struct Root(pub PathBuf);

impl Root {
    pub fn host() -> Root {
        Root(PathBuf::from("/"))
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.0.join(p.trim_start_matches('/'))
    }

    pub fn read(&self, p: &str) -> Option<String> {
        std::fs::read_to_string(self.path(p))
            .ok()
            .map(|s| s.trim().to_string())
    }
}

/// The bracketed choice of a sysfs list such as `always [madvise] never`.
pub fn selected(list: &str) -> Option<&str> {
    let start = list.find('[')?;
    let end = list[start..].find(']')? + start;
    Some(&list[start + 1..end])
}

/// What a numeric /proc/sys value should at least be.
fn at_least(root: &Root, name: &str, file: &str, min: u64, why: &str) -> Check {
    match root.read(file).and_then(|v| v.parse::<u64>().ok()) {
        None => Check::new(name, "unknown", format!(">= {min}")).status(
            Status::NotApplicable,
            &format!("{file} is not readable here"),
        ),
        Some(v) if v >= min => {
            Check::new(name, v.to_string(), format!(">= {min}")).status(Status::Ok, why)
        }
        Some(v) => Check::new(name, v.to_string(), format!(">= {min}"))
            .status(Status::Warn, why)
            .fix(root.path(file), &min.to_string()),
    }
}

pub fn io_uring(root: &Root, ring_works: Option<bool>) -> Check {
    let disabled = root.read("/proc/sys/kernel/io_uring_disabled");
    let current = match (&disabled, ring_works) {
        (Some(d), Some(w)) => format!(
            "io_uring_disabled={d}, test ring {}",
            if w { "ok" } else { "refused" }
        ),
        (Some(d), None) => format!("io_uring_disabled={d}"),
        (None, Some(w)) => format!("test ring {}", if w { "ok" } else { "refused" }),
        (None, None) => "unknown".into(),
    };
    let c = Check::new("io_uring", current, "io_uring_disabled=0, test ring ok");
    let mut c = match (disabled.as_deref(), ring_works) {
        (_, Some(false)) => c.status(Status::Fail, "the shards do all their I/O through io_uring"),
        (Some("1") | Some("2"), _) => c
            .status(
                Status::Fail,
                "io_uring is disabled for this process by the kernel",
            )
            .fix(root.path("/proc/sys/kernel/io_uring_disabled"), "0"),
        _ => c.status(Status::Ok, "the shards do all their I/O through io_uring"),
    };
    c.critical = true;
    c
}

/// The locked-memory limit against what `shards` executors register.
pub fn memlock(limit: Option<u64>, shards: usize) -> Check {
    let need = limits::MEMLOCK_BYTES_MIN * shards.max(1) as u64;
    let want = (limits::IO_MEMORY_BYTES_MAX as u64 * 3) * shards.max(1) as u64;
    let show = |v: Option<u64>| v.map_or("unlimited".to_string(), |b| format!("{} KiB", b / 1024));
    let mut c = Check::new(
        "locked memory (ulimit -l)",
        show(limit),
        format!(">= {} KiB", want / 1024),
    );
    c.critical = true;
    match limit {
        None => c.status(Status::Ok, "io_uring buffers are registered as locked memory"),
        Some(l) if l < need => c.status(
            Status::Fail,
            "too small to register the shards' io_uring buffers; raise it in limits.conf or the unit's LimitMEMLOCK (tuning/deploy/sluice.service sets every limit)",
        ),
        Some(l) if l < want => c.status(
            Status::Warn,
            "the shards fit, with smaller registered buffers than they could use",
        ),
        Some(_) => c.status(Status::Ok, "io_uring buffers are registered as locked memory"),
    }
}

pub fn open_files(soft: Option<u64>) -> Check {
    let min = 65_536;
    let c = Check::new(
        "open files (ulimit -n)",
        soft.map_or("unlimited".into(), |v| v.to_string()),
        format!(">= {min}"),
    );
    match soft {
        Some(v) if v < min => c.status(
            Status::Warn,
            "every segment, index and connection holds a descriptor; raise LimitNOFILE",
        ),
        _ => c.status(
            Status::Ok,
            "every segment, index and connection holds a descriptor",
        ),
    }
}

pub fn governor(root: &Root, cpus: usize) -> Check {
    let mut values = Vec::new();
    let mut fixes = Vec::new();
    for cpu in 0..cpus {
        let f = format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor");
        if let Some(v) = root.read(&f) {
            if v != "performance" {
                fixes.push(Fix {
                    path: root.path(&f),
                    value: "performance".into(),
                });
            }
            values.push(v);
        }
    }
    if values.is_empty() {
        return Check::new("CPU frequency governor", "none", "performance").status(
            Status::NotApplicable,
            "no cpufreq here (a VM, or fixed frequency)",
        );
    }
    values.sort();
    values.dedup();
    let mut c = Check::new("CPU frequency governor", values.join(","), "performance");
    if fixes.is_empty() {
        c = c.status(Status::Ok, "a core that clocks down adds wake-up latency");
    } else {
        c = c.status(Status::Warn, "a core that clocks down adds wake-up latency");
        c.fixes = fixes;
    }
    c
}

pub fn transparent_hugepages(root: &Root) -> Check {
    let f = "/sys/kernel/mm/transparent_hugepage/enabled";
    let Some(list) = root.read(f) else {
        return Check::new("transparent huge pages", "unknown", "madvise")
            .status(Status::NotApplicable, "no THP setting here");
    };
    let cur = selected(&list).unwrap_or("unknown").to_string();
    let c = Check::new("transparent huge pages", cur.clone(), "madvise");
    if cur == "madvise" {
        c.status(
            Status::Ok,
            "huge pages where asked for (the shards' DMA buffers), no compaction stalls elsewhere",
        )
    } else {
        c.status(
            Status::Warn,
            "'always' can stall a shard on memory compaction; 'never' leaves DMA buffers in scattered 4 KiB pages",
        )
        .fix(root.path(f), "madvise")
    }
}

pub fn swappiness(root: &Root) -> Check {
    let f = "/proc/sys/vm/swappiness";
    match root.read(f).and_then(|v| v.parse::<u64>().ok()) {
        None => Check::new("vm.swappiness", "unknown", "<= 1")
            .status(Status::NotApplicable, "not readable here"),
        Some(v) if v <= 1 => Check::new("vm.swappiness", v.to_string(), "<= 1").status(
            Status::Ok,
            "a swapped-out shard stalls every partition it owns",
        ),
        Some(v) => Check::new("vm.swappiness", v.to_string(), "<= 1")
            .status(
                Status::Warn,
                "a swapped-out shard stalls every partition it owns",
            )
            .fix(root.path(f), "1"),
    }
}

pub fn clocksource(root: &Root) -> Check {
    let base = "/sys/devices/system/clocksource/clocksource0";
    let Some(cur) = root.read(&format!("{base}/current_clocksource")) else {
        return Check::new("clocksource", "unknown", "tsc")
            .status(Status::NotApplicable, "not readable here");
    };
    let available = root
        .read(&format!("{base}/available_clocksource"))
        .unwrap_or_default();
    let c = Check::new("clocksource", cur.clone(), "tsc");
    if cur == "tsc" {
        c.status(
            Status::Ok,
            "timestamps and timers are read without a system call",
        )
    } else if available.split_whitespace().any(|s| s == "tsc") {
        c.status(Status::Warn, "every timestamp costs more than with tsc")
            .fix(root.path(&format!("{base}/current_clocksource")), "tsc")
    } else {
        c.status(
            Status::Warn,
            "tsc is not offered by this kernel (not changeable here)",
        )
    }
}

/// The block device holding `dev` (major:minor): a partition's parent
/// disk, as a /sys/dev/block path.
pub fn block_device(root: &Root, major: u32, minor: u32) -> Option<PathBuf> {
    let dev = root.path(&format!("/sys/dev/block/{major}:{minor}"));
    let real = std::fs::canonicalize(&dev).ok()?;
    if real.join("partition").exists() {
        real.parent().map(Path::to_path_buf)
    } else {
        Some(real)
    }
}

/// The scheduler, nr_requests and write cache of the data disk (`disk`, a
/// /sys/block/<name> directory; none when the data is not on a block
/// device, as on tmpfs or overlay).
pub fn disk(disk: Option<&Path>) -> Vec<Check> {
    let Some(d) = disk else {
        return ["I/O scheduler", "nr_requests", "write cache"]
            .into_iter()
            .map(|n| {
                Check::new(n, "none", "-").status(
                    Status::NotApplicable,
                    "the data directory is not on a block device",
                )
            })
            .collect();
    };
    let read = |f: &str| {
        std::fs::read_to_string(d.join(f))
            .ok()
            .map(|s| s.trim().to_string())
    };
    let mut out = Vec::new();
    match read("queue/scheduler") {
        Some(list) => {
            let cur = selected(&list).unwrap_or(list.as_str()).to_string();
            let c = Check::new("I/O scheduler", cur.clone(), "none");
            out.push(if cur == "none" {
                c.status(Status::Ok, "the shards order and size their own I/O")
            } else if list
                .split_whitespace()
                .any(|s| s.trim_matches(['[', ']']) == "none")
            {
                c.status(
                    Status::Warn,
                    "a scheduler reorders and delays what the shards already ordered",
                )
                .fix(d.join("queue/scheduler"), "none")
            } else {
                c.status(Status::Warn, "this device offers no 'none' scheduler")
            });
        }
        None => out.push(
            Check::new("I/O scheduler", "unknown", "none")
                .status(Status::NotApplicable, "not readable here"),
        ),
    }
    match read("queue/nr_requests").and_then(|v| v.parse::<u64>().ok()) {
        Some(v) if v >= 256 => out.push(Check::new("nr_requests", v.to_string(), ">= 256").status(
            Status::Ok,
            "deep enough for the shards' write-behind and read-ahead",
        )),
        Some(v) => out.push(
            Check::new("nr_requests", v.to_string(), ">= 256")
                .status(
                    Status::Warn,
                    "a shallow queue caps the I/O the shards keep in flight",
                )
                .fix(d.join("queue/nr_requests"), "256"),
        ),
        None => out.push(
            Check::new("nr_requests", "unknown", ">= 256")
                .status(Status::NotApplicable, "not readable here"),
        ),
    }
    match read("queue/write_cache") {
        Some(v) => out.push(
            Check::new("write cache", v.clone(), "as the device reports").status(
                Status::Ok,
                if v.contains("back") {
                    "volatile cache: durability rests on the flush each fdatasync sends"
                } else {
                    "no volatile cache: every write is durable when it completes"
                },
            ),
        ),
        None => out.push(
            Check::new("write cache", "unknown", "-")
                .status(Status::NotApplicable, "not readable here"),
        ),
    }
    out
}

/// Receive packet steering of every network interface but loopback.
pub fn nics(root: &Root, cpus: usize) -> Check {
    let Ok(entries) = std::fs::read_dir(root.path("/sys/class/net")) else {
        return Check::new("NIC interrupts / RPS", "none", "-")
            .status(Status::NotApplicable, "no network interfaces here");
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lo" && root.path(&format!("/sys/class/net/{n}/device")).exists())
        .collect();
    names.sort();
    if names.is_empty() {
        return Check::new("NIC interrupts / RPS", "no physical NIC", "-")
            .status(Status::NotApplicable, "only virtual interfaces here");
    }
    let all = format!("{:x}", (1u128 << cpus.min(127)) - 1);
    let mut states = Vec::new();
    let mut spread = true;
    for n in &names {
        let q = root
            .read(&format!("/sys/class/net/{n}/queues/rx-0/rps_cpus"))
            .unwrap_or_default();
        let on = q.trim_start_matches(['0', ',']).to_string();
        spread &= !on.is_empty();
        states.push(format!(
            "{n} rps={}",
            if on.is_empty() { "off" } else { q.as_str() }
        ));
    }
    let c = Check::new(
        "NIC interrupts / RPS",
        states.join(" "),
        format!("rps_cpus={all} where one queue feeds several cores"),
    );
    if spread || cpus <= 1 {
        c.status(Status::Ok, "receive work is spread over the cores")
    } else {
        c.status(
            Status::Warn,
            "one core takes every receive interrupt; spread them (RPS or IRQ affinity; not changed by tune)",
        )
    }
}

/// Whether `dir` takes O_DIRECT writes at the storage's alignment.
/// The name of the O_DIRECT check (`sluice serve` refuses to start when it
/// fails).
pub const DIRECT_IO: &str = "O_DIRECT in the data directory";

pub fn direct_io(dir: &Path) -> Check {
    let mut c = Check::new(
        DIRECT_IO,
        "unknown",
        format!("supported at {} bytes", limits::DIRECT_IO_ALIGN_BYTES),
    );
    c.critical = true;
    match probe_direct_io(dir) {
        Ok(()) => {
            c.current = "supported".into();
            c.status(Status::Ok, "segments are written and read with direct I/O")
        }
        Err(e) => {
            c.current = e;
            c.status(
                Status::Fail,
                "segments are written and read with direct I/O (tmpfs and some overlays refuse it)",
            )
        }
    }
}

fn probe_direct_io(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    let probe = dir.join(".sluice-tune-probe");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe)
        .map_err(|e| format!("open: {e}"));
    let r = f.and_then(|f| {
        let align = limits::DIRECT_IO_ALIGN_BYTES;
        let layout = std::alloc::Layout::from_size_align(align, align).expect("valid layout");
        // SAFETY: the buffer is allocated with the layout, written by
        // write(2) only as input, and freed with the same layout.
        unsafe {
            let buf = std::alloc::alloc_zeroed(layout);
            let n = libc::pwrite(f.as_raw_fd(), buf as *const libc::c_void, align, 0);
            let err = std::io::Error::last_os_error();
            std::alloc::dealloc(buf, layout);
            if n == align as isize {
                Ok(())
            } else {
                Err(format!("write: {err}"))
            }
        }
    });
    let _ = std::fs::remove_file(&probe);
    r
}

/// Whether the kernel gives this process an io_uring (a tiny ring, set
/// up and closed).
pub fn test_ring() -> bool {
    #[repr(C)]
    #[derive(Default)]
    struct Params {
        words: [u32; 30],
    }
    let mut p = Params::default();
    // SAFETY: io_uring_setup reads and writes the params struct we own
    // (120 bytes, the kernel's io_uring_params size) and returns a
    // descriptor we close.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, &mut p as *mut Params) };
    if fd < 0 {
        return false;
    }
    // SAFETY: closes the descriptor the kernel just returned.
    unsafe { libc::close(fd as i32) };
    true
}

fn open_files_limit() -> Option<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0
        || rl.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    Some(rl.rlim_cur)
}

/// The device number of the file system holding `dir`.
fn dev_of(dir: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let d = std::fs::metadata(dir).ok()?.dev();
    Some((libc::major(d), libc::minor(d)))
}

/// Every check, for a broker with `shards` shards keeping its data in
/// `data_dir`.
pub fn all_checks(root: &Root, data_dir: &Path, shards: usize) -> Vec<Check> {
    let cpus = host::online_cpus();
    let mut out = vec![
        io_uring(root, Some(test_ring())),
        memlock(host::memlock_limit_bytes(), shards),
        open_files(open_files_limit()),
        at_least(
            root,
            "fs.aio-max-nr",
            "/proc/sys/fs/aio-max-nr",
            1_048_576,
            "asynchronous I/O contexts for the executors' blocking pools",
        ),
        governor(root, cpus),
        transparent_hugepages(root),
        swappiness(root),
        clocksource(root),
    ];
    let disk_dir = dev_of(data_dir).and_then(|(ma, mi)| block_device(root, ma, mi));
    out.extend(disk(disk_dir.as_deref()));
    out.push(at_least(
        root,
        "net.core.somaxconn",
        "/proc/sys/net/core/somaxconn",
        4096,
        "connections waiting to be accepted during a burst",
    ));
    out.push(at_least(
        root,
        "net.ipv4.tcp_max_syn_backlog",
        "/proc/sys/net/ipv4/tcp_max_syn_backlog",
        4096,
        "half-open connections kept during a burst",
    ));
    out.push(nics(root, cpus));
    out.push(direct_io(data_dir));
    out
}

/// Applies `c`'s fixes; returns one line per change made or refused.
pub fn apply(c: &mut Check) -> Vec<String> {
    let mut lines = Vec::new();
    let mut changed = false;
    for f in &c.fixes {
        match std::fs::write(&f.path, format!("{}\n", f.value)) {
            Ok(()) => {
                changed = true;
                lines.push(format!(
                    "{}: wrote {} to {}",
                    c.name,
                    f.value,
                    f.path.display()
                ));
            }
            Err(e) => lines.push(format!(
                "{}: cannot write {} to {}: {e} (not permitted here; change it on the host)",
                c.name,
                f.value,
                f.path.display()
            )),
        }
    }
    if changed {
        c.status = Status::Changed;
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(files: &[(&str, &str)]) -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        for (p, v) in files {
            let path = dir.path().join(p.trim_start_matches('/'));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, v).unwrap();
        }
        let root = Root(dir.path().to_path_buf());
        (dir, root)
    }

    #[test]
    fn sysfs_lists_and_numbers() {
        assert_eq!(selected("always [madvise] never"), Some("madvise"));
        assert_eq!(selected("[none] mq-deadline kyber"), Some("none"));
        assert_eq!(selected("none"), None);
        let (_d, root) = fixture(&[
            ("/proc/sys/fs/aio-max-nr", "65536\n"),
            ("/proc/sys/net/core/somaxconn", "4096\n"),
            ("/proc/sys/vm/swappiness", "60\n"),
            (
                "/sys/kernel/mm/transparent_hugepage/enabled",
                "[always] madvise never\n",
            ),
        ]);
        let aio = at_least(
            &root,
            "fs.aio-max-nr",
            "/proc/sys/fs/aio-max-nr",
            1_048_576,
            "",
        );
        assert_eq!((aio.status, aio.current.as_str()), (Status::Warn, "65536"));
        assert_eq!(aio.fixes[0].value, "1048576");
        assert!(aio.fixes[0].path.starts_with(&root.0));
        let s = at_least(&root, "somaxconn", "/proc/sys/net/core/somaxconn", 4096, "");
        assert_eq!(s.status, Status::Ok);
        assert!(s.fixes.is_empty());
        let sw = swappiness(&root);
        assert_eq!((sw.status, sw.current.as_str()), (Status::Warn, "60"));
        let thp = transparent_hugepages(&root);
        assert_eq!((thp.status, thp.current.as_str()), (Status::Warn, "always"));
        assert_eq!(thp.fixes[0].value, "madvise");
        let missing = at_least(&root, "x", "/proc/sys/no/such", 1, "");
        assert_eq!(missing.status, Status::NotApplicable);
    }

    #[test]
    fn io_uring_and_memlock() {
        let (_d, root) = fixture(&[("/proc/sys/kernel/io_uring_disabled", "2\n")]);
        let c = io_uring(&root, Some(true));
        assert_eq!(c.status, Status::Fail);
        assert!(c.critical);
        let (_d, root) = fixture(&[("/proc/sys/kernel/io_uring_disabled", "0\n")]);
        assert_eq!(io_uring(&root, Some(true)).status, Status::Ok);
        assert_eq!(io_uring(&root, Some(false)).status, Status::Fail);
        assert_eq!(memlock(Some(64 * 1024), 2).status, Status::Fail);
        assert_eq!(memlock(Some(8 << 20), 2).status, Status::Warn);
        assert_eq!(memlock(Some(1 << 30), 2).status, Status::Ok);
        assert_eq!(memlock(None, 64).status, Status::Ok);
        assert_eq!(open_files(Some(1024)).status, Status::Warn);
        assert_eq!(open_files(Some(1 << 20)).status, Status::Ok);
    }

    #[test]
    fn governor_clocksource_disk_and_nics() {
        let (_d, root) = fixture(&[
            (
                "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
                "powersave\n",
            ),
            (
                "/sys/devices/system/cpu/cpu1/cpufreq/scaling_governor",
                "performance\n",
            ),
            (
                "/sys/devices/system/clocksource/clocksource0/current_clocksource",
                "kvm-clock\n",
            ),
            (
                "/sys/devices/system/clocksource/clocksource0/available_clocksource",
                "kvm-clock tsc acpi_pm\n",
            ),
            (
                "/sys/block/vda/queue/scheduler",
                "[mq-deadline] kyber none\n",
            ),
            ("/sys/block/vda/queue/nr_requests", "64\n"),
            ("/sys/block/vda/queue/write_cache", "write back\n"),
            ("/sys/class/net/eth0/device/vendor", "0x1af4\n"),
            ("/sys/class/net/eth0/queues/rx-0/rps_cpus", "00\n"),
            ("/sys/class/net/lo/queues/rx-0/rps_cpus", "00\n"),
        ]);
        let g = governor(&root, 2);
        assert_eq!(g.status, Status::Warn);
        assert_eq!(g.fixes.len(), 1);
        assert!(g.fixes[0].path.ends_with("cpu0/cpufreq/scaling_governor"));
        assert_eq!(governor(&root, 0).status, Status::NotApplicable);
        let c = clocksource(&root);
        assert_eq!((c.status, c.fixes.len()), (Status::Warn, 1));
        let d = disk(Some(&root.0.join("sys/block/vda")));
        assert_eq!(d[0].current, "mq-deadline");
        assert_eq!(d[0].status, Status::Warn);
        assert_eq!(d[0].fixes[0].value, "none");
        assert_eq!((d[1].status, d[1].current.as_str()), (Status::Warn, "64"));
        assert!(d[2].why.contains("flush"));
        assert!(disk(None).iter().all(|c| c.status == Status::NotApplicable));
        let n = nics(&root, 4);
        assert_eq!(n.status, Status::Warn, "{n:?}");
        assert!(n.current.contains("eth0 rps=off"));
        assert!(!n.current.contains("lo "));
        let (_d, bare) = fixture(&[("/sys/class/net/lo/queues/rx-0/rps_cpus", "0\n")]);
        assert_eq!(nics(&bare, 4).status, Status::NotApplicable);
    }

    #[test]
    fn apply_writes_fixes_and_reports_refusals() {
        let (_d, root) = fixture(&[("/proc/sys/vm/swappiness", "60\n")]);
        let mut c = swappiness(&root);
        let lines = apply(&mut c);
        assert_eq!(c.status, Status::Changed);
        assert!(lines[0].contains("wrote 1"), "{lines:?}");
        assert_eq!(root.read("/proc/sys/vm/swappiness").as_deref(), Some("1"));
        let mut c = Check::new("x", "a", "b").status(Status::Warn, "");
        c.fixes.push(Fix {
            path: root.path("/no/such/dir/file"),
            value: "1".into(),
        });
        let lines = apply(&mut c);
        assert_eq!(c.status, Status::Warn);
        assert!(lines[0].contains("not permitted"), "{lines:?}");
    }

    #[test]
    fn direct_io_probe() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let c = direct_io(dir.path());
        assert!(c.critical);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        let c = direct_io(Path::new("/no/such/dir"));
        assert_eq!(c.status, Status::Fail);
        assert!(test_ring(), "this kernel has io_uring");
    }
}

//! Facts about the host that sizing decisions depend on.

use crate::limits;

/// The process's RLIMIT_MEMLOCK soft limit in bytes (`None` = unlimited).
pub fn memlock_limit_bytes() -> Option<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and has no other effect.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rl) };
    if rc != 0 || rl.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(rl.rlim_cur)
}

/// Raises the RLIMIT_MEMLOCK soft limit as far as the hard limit allows.
/// Returns the soft limit in force afterwards (`None` = unlimited).
pub fn raise_memlock_limit() -> Option<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as above; setrlimit only changes this process's limit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &rl);
        }
    }
    memlock_limit_bytes()
}

/// Tells the C allocator to keep freed memory for reuse instead of
/// handing it back to the kernel (and to serve large buffers from its heap
/// rather than from fresh mappings). Request buffers and cached batches
/// are allocated and freed at the rate data flows; memory handed back
/// comes back as fresh pages, which the kernel must fault in and zero
/// (measured at about 40% of a shard's time under a 16 KiB produce load).
/// Resident memory then stays at its high-water mark, which the cache
/// budget bounds.
pub fn keep_freed_memory() {
    // SAFETY: mallopt only changes the allocator's tunables; called before
    // the shard threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, limits::MALLOC_MMAP_THRESHOLD_BYTES);
        libc::mallopt(libc::M_TRIM_THRESHOLD, limits::MALLOC_TRIM_THRESHOLD_BYTES);
    }
}

/// I/O memory each of `executors` glommio executors may register so that
/// all of them together stay within `memlock_bytes` (`None` = unlimited).
/// Returns `None` when the limit is too small for glommio to start at all.
pub fn io_memory_per_executor(memlock_bytes: Option<u64>, executors: usize) -> Option<usize> {
    let executors = executors.max(1) as u64;
    let Some(limit) = memlock_bytes else {
        return Some(limits::IO_MEMORY_BYTES_MAX);
    };
    if limit < limits::MEMLOCK_BYTES_MIN {
        return None;
    }
    // Leave a quarter of the limit for the rings themselves and for anything
    // else in the process that locks memory.
    let usable = limit / 4 * 3;
    let per = usable / (executors * limits::IO_URING_RINGS_PER_EXECUTOR);
    let per = per / 4096 * 4096;
    Some((per as usize).clamp(64 * 1024, limits::IO_MEMORY_BYTES_MAX))
}

/// Total memory of the machine from `/proc/meminfo` text.
pub fn parse_meminfo_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut parts = line.split_whitespace().skip(1);
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(value * 1024),
        Some(_) => None,
    }
}

/// Total memory of this machine, read once at start-up (never on a shard's
/// hot path).
pub fn total_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo_total_bytes(&text)
}

/// How a shard's memory is divided: its heap (faulted in at start), the
/// cache budget within it, and the request memory budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPlan {
    pub heap_bytes: usize,
    pub cache_bytes: usize,
    pub request_bytes: usize,
}

/// The memory of each of `shards` shards, from the machine's memory where
/// a figure is not given: the heap is `SHARD_MEMORY_PERCENT_DEFAULT` of
/// the machine over the shards, the cache `CACHE_SHARE_OF_HEAP_PERCENT` of
/// the heap, the request memory as [`request_memory_per_shard`]. A cache
/// given larger than the heap's share grows the heap to hold it.
pub fn memory_plan(
    total_memory_bytes: Option<u64>,
    shards: usize,
    heap: Option<usize>,
    cache: Option<usize>,
    request: Option<usize>,
) -> MemoryPlan {
    let total = total_memory_bytes.unwrap_or(4 << 30);
    let shards = shards.max(1) as u64;
    let share = |percent: u64, of: u64| (of / 100 * percent) as usize;
    let default_heap = share(limits::SHARD_MEMORY_PERCENT_DEFAULT, total / shards);
    let heap = heap
        .unwrap_or(default_heap)
        .max(limits::SHARD_MEMORY_BYTES_MIN);
    let cache_bytes = cache
        .unwrap_or_else(|| share(limits::CACHE_SHARE_OF_HEAP_PERCENT, heap as u64))
        .max(limits::CACHE_BYTES_MIN);
    let request_bytes =
        request.unwrap_or_else(|| request_memory_per_shard(total_memory_bytes, shards as usize));
    let for_cache = cache_bytes / limits::CACHE_SHARE_OF_HEAP_PERCENT as usize * 100;
    MemoryPlan {
        heap_bytes: heap.max(for_cache),
        cache_bytes,
        request_bytes,
    }
}

/// The default per-shard request memory budget (see
/// `limits::REQUEST_MEMORY_PERCENT_DEFAULT`).
pub fn request_memory_per_shard(total_memory_bytes: Option<u64>, shards: usize) -> usize {
    let total = total_memory_bytes.unwrap_or(4 << 30);
    let share = total / 100 * limits::REQUEST_MEMORY_PERCENT_DEFAULT / shards.max(1) as u64;
    (share as usize).clamp(
        limits::REQUEST_MEMORY_BYTES_MIN,
        limits::REQUEST_MEMORY_BYTES_DEFAULT_MAX,
    )
}

/// Number of CPUs this process may run on.
pub fn online_cpus() -> usize {
    allowed_cpus().len()
}

/// Parses the kernel's CPU list format (`0-3,8,10-11`), as in a thread's
/// `Cpus_allowed_list`; sorted, each CPU once. `None` for anything else.
pub fn parse_cpu_list(s: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in s.trim().split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                if a > b || b >= libc::CPU_SETSIZE as usize {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Some(cpus)
}

/// The CPUs this process may run on (its affinity mask, as `taskset` or a
/// cgroup cpuset leave it), in ascending order: shard or worker N runs on
/// the N-th of them. Never empty.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: sched_getaffinity writes at most size_of::<cpu_set_t>() bytes
    // into the set we own.
    let cpus: Vec<usize> = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            Vec::new()
        } else {
            (0..libc::CPU_SETSIZE as usize)
                .filter(|c| libc::CPU_ISSET(*c, &set))
                .collect()
        }
    };
    if cpus.is_empty() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        return (0..n).collect();
    }
    cpus
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the CPU list is the affinity mask in ascending order: the
    // same CPUs the kernel reports for this thread, each once, sorted.
    #[test]
    fn allowed_cpus_follow_the_affinity_mask() {
        let cpus = allowed_cpus();
        assert!(!cpus.is_empty());
        assert!(cpus.windows(2).all(|w| w[0] < w[1]), "{cpus:?}");
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let list = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim();
        let expected = parse_cpu_list(list).unwrap();
        assert_eq!(cpus, expected);
        assert_eq!(online_cpus(), expected.len());
    }

    // Proves the kernel's CPU list format (as in Cpus_allowed_list and
    // /sys/devices/system/cpu/online) parses, and junk does not.
    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("3,1"), Some(vec![1, 3]));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("2-1"), None);
        assert_eq!(parse_cpu_list("a"), None);
        assert_eq!(parse_cpu_list("0-"), None);
    }

    // Proves /proc/meminfo parsing reads MemTotal in kB and rejects junk.
    #[test]
    fn meminfo_total() {
        let text = "MemTotal:       24576000 kB\nMemFree:        1000 kB\n";
        assert_eq!(parse_meminfo_total_bytes(text), Some(24_576_000 * 1024));
        assert_eq!(parse_meminfo_total_bytes("MemFree: 1 kB\n"), None);
        assert_eq!(parse_meminfo_total_bytes("MemTotal: x kB\n"), None);
        assert_eq!(parse_meminfo_total_bytes("MemTotal: 10 MB\n"), None);
    }

    // Proves the I/O memory of all executors, times the rings each registers
    // with, fits in the locked-memory limit this machine has (8 MiB).
    #[test]
    fn io_memory_fits_memlock() {
        let limit = 8 * 1024 * 1024;
        for executors in 1..=16 {
            let per = io_memory_per_executor(Some(limit), executors).unwrap();
            if per > 64 * 1024 {
                assert!(
                    per as u64 * 3 * executors as u64 <= limit,
                    "{executors}: {per}"
                );
            }
            assert_eq!(per % 4096, 0);
        }
        assert_eq!(io_memory_per_executor(Some(64 * 1024), 1), None);
        assert_eq!(
            io_memory_per_executor(None, 4),
            Some(limits::IO_MEMORY_BYTES_MAX)
        );
    }

    // Proves the memory plan divides the machine between shards, gives the
    // cache its share of the heap, keeps the floors, and grows the heap
    // for a larger cache given by hand.
    #[test]
    fn memory_plan_follows_the_machine() {
        let total = 24u64 << 30;
        let p = memory_plan(Some(total), 2, None, None, None);
        assert_eq!(p.heap_bytes, (total / 2 / 100 * 30) as usize);
        assert_eq!(p.cache_bytes, p.heap_bytes / 100 * 75);
        assert_eq!(p.request_bytes, request_memory_per_shard(Some(total), 2));
        let four = memory_plan(Some(total), 4, None, None, None);
        assert_eq!(four.heap_bytes, p.heap_bytes / 2);
        let tiny = memory_plan(Some(1 << 20), 2, None, None, None);
        assert_eq!(tiny.heap_bytes, limits::SHARD_MEMORY_BYTES_MIN);
        assert!(tiny.cache_bytes >= limits::CACHE_BYTES_MIN);
        let given = memory_plan(Some(total), 2, Some(256 << 20), None, Some(300 << 20));
        assert_eq!(given.heap_bytes, 256 << 20);
        assert_eq!(given.cache_bytes, (256u64 << 20) as usize / 100 * 75);
        assert_eq!(given.request_bytes, 300 << 20);
        let big_cache = memory_plan(Some(total), 2, Some(256 << 20), Some(3 << 30), None);
        assert_eq!(big_cache.cache_bytes, 3 << 30);
        assert_eq!(big_cache.heap_bytes, (3usize << 30) / 75 * 100);
    }
}

//! The storage crate's only contact with the runtime's file API.
//!
//! Every call here is asynchronous on the shard's io_uring ring, or runs on
//! glommio's blocking-thread pool (directory listing and creation), so no
//! blocking syscall ever runs on the shard thread; the `*_blocking` calls
//! and `raw_fd` are for iotune's measuring alone. Keeping this seam narrow
//! is what would let the runtime be replaced.

use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use glommio::io::{DmaBuffer, DmaFile, OpenOptions};

use crate::error::glommio_io;
use sluice_tuning::limits::DIRECT_IO_ALIGN_BYTES as ALIGN;

pub(crate) fn align_down(v: u64) -> u64 {
    v / ALIGN as u64 * ALIGN as u64
}

pub(crate) fn align_up(v: u64) -> u64 {
    v.div_ceil(ALIGN as u64) * ALIGN as u64
}

/// An O_DIRECT file opened for reading and writing.
#[derive(Clone)]
pub(crate) struct DirectFile {
    file: Rc<DmaFile>,
    path: Rc<Path>,
}

impl DirectFile {
    pub async fn open(path: &Path, create: bool) -> io::Result<DirectFile> {
        crate::faults::power::on_open(path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .dma_open(path)
            .await
            .map_err(glommio_io)?;
        Ok(DirectFile {
            file: Rc::new(file),
            path: Rc::from(path),
        })
    }

    pub fn alloc(&self, bytes: usize) -> DmaBuffer {
        self.file.alloc_dma_buffer(bytes)
    }

    pub async fn size(&self) -> io::Result<u64> {
        self.file.file_size().await.map_err(glommio_io)
    }

    /// Writes the whole buffer at an aligned position.
    pub async fn write(&self, buf: Rc<DmaBuffer>, pos: u64) -> io::Result<()> {
        crate::faults::write_result()?;
        debug_assert_eq!(pos % ALIGN as u64, 0);
        let want = buf.len();
        crate::faults::power::on_write(&self.path, pos, want);
        let n = self.file.write_rc_at(buf, pos).await.map_err(glommio_io)?;
        if n != want {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {n} of {want} bytes at {pos}"),
            ));
        }
        Ok(())
    }

    pub async fn fdatasync(&self) -> io::Result<()> {
        crate::faults::sync_result()?;
        self.file.fdatasync().await.map_err(glommio_io)?;
        crate::faults::power::on_sync(&self.path);
        Ok(())
    }

    /// fdatasync(2) on the calling thread: blocks it until the disk has
    /// the data. For measuring (iotune) only; the log uses `fdatasync`.
    pub fn fdatasync_blocking(&self) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        crate::faults::sync_result()?;
        // SAFETY: fdatasync on a descriptor this file owns and keeps open.
        if unsafe { libc::fdatasync(self.file.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The descriptor, for iotune's own ring (`kernel_ring`), which
    /// measures the same file without the executor.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.file.as_raw_fd()
    }

    /// pwrite(2) of the whole buffer on the calling thread: blocks it until
    /// the device has the data. For measuring (iotune) only.
    pub fn write_blocking(&self, buf: &DmaBuffer, pos: u64) -> io::Result<()> {
        crate::faults::write_result()?;
        // SAFETY: the buffer is valid for its length for the whole call,
        // and the descriptor is this file's own.
        let n = unsafe {
            libc::pwrite(
                self.raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                pos as libc::off_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {n} of {} bytes at {pos}", buf.len()),
            ));
        }
        Ok(())
    }

    pub async fn truncate(&self, len: u64) -> io::Result<()> {
        crate::faults::power::on_truncate(&self.path, len);
        self.file.truncate(len).await.map_err(glommio_io)
    }

    /// Reads one aligned chunk into a buffer the caller owns: sliced and
    /// sent to other threads without copying. From the blocking pool with
    /// `via_pool` (read straight into the buffer); otherwise through
    /// io_uring, whose buffer is the runtime's and is copied out once.
    pub async fn read_chunk_owned(
        &self,
        pos: u64,
        len: usize,
        via_pool: bool,
    ) -> io::Result<Bytes> {
        if via_pool {
            return pread_on_pool(&self.file, pos, len).await;
        }
        Ok(match read_aligned(&self.file, pos, len).await? {
            Chunk::Uring(r) => Bytes::copy_from_slice(&r),
            Chunk::Pool(b) => b,
        })
    }

    /// Reads one aligned chunk: the runtime's buffer, not copied.
    pub async fn read_chunk(&self, pos: u64, len: usize) -> io::Result<Chunk> {
        read_aligned(&self.file, pos, len).await
    }

    /// Reads `[pos, pos + len)` (any alignment) into one buffer, as aligned
    /// DMA reads of `chunk` bytes issued together so the device sees a deep
    /// queue. Returns fewer bytes when the file ends first.
    pub async fn read_range(&self, pos: u64, len: usize, chunk: usize) -> io::Result<Bytes> {
        let start = align_down(pos);
        let end = align_up(pos + len as u64);
        let mut tasks = Vec::new();
        let mut p = start;
        while p < end {
            let n = (chunk as u64).min(end - p) as usize;
            let f = self.file.clone();
            let t = glommio::spawn_local(async move { read_aligned(&f, p, n).await });
            tasks.push((n, t));
            p += n as u64;
        }
        let mut out = BytesMut::with_capacity((end - start) as usize);
        let mut short = false;
        for (n, t) in tasks {
            let r = t.await?;
            if !short {
                out.extend_from_slice(&r);
            }
            // A short read means the file ended: later chunks read nothing.
            short |= r.len() < n;
        }
        let skip = (pos - start) as usize;
        let have = out.len().saturating_sub(skip).min(len);
        Ok(out.freeze().slice(skip..skip + have))
    }
}

/// Reads served on the blocking pool after io_uring refuses one, before
/// io_uring is tried again.
const POOL_READS_AFTER_REFUSAL: u32 = 256;

thread_local! {
    /// Some block devices (seen on virtio disks, intermittently) fail the
    /// ring's non-blocking O_DIRECT read with EOPNOTSUPP instead of EAGAIN.
    /// After such a refusal this shard reads on its blocking-thread pool
    /// for a while, then tries io_uring again.
    static POOL_READS_LEFT: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    static READ_PATHS: std::cell::Cell<ReadPaths> = const { std::cell::Cell::new(ReadPaths { uring: 0, pool: 0, refusals: 0 }) };
}

/// How this shard's segment reads were served so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadPaths {
    /// DMA reads served by io_uring.
    pub uring: u64,
    /// Reads served by `pread` on the blocking-thread pool.
    pub pool: u64,
    /// io_uring reads the device refused (EOPNOTSUPP).
    pub refusals: u64,
}

pub(crate) fn reset_read_backoff() {
    POOL_READS_LEFT.with(|c| c.set(0));
}

/// Counters of this shard's read paths.
pub fn read_paths() -> ReadPaths {
    READ_PATHS.with(|c| c.get())
}

fn count(f: impl FnOnce(&mut ReadPaths)) {
    READ_PATHS.with(|c| {
        let mut p = c.get();
        f(&mut p);
        c.set(p);
    });
}

/// One chunk read from disk: the runtime's own buffer (io_uring) or a
/// buffer filled on the pool. Either is copied once, into the caller's.
pub(crate) enum Chunk {
    Uring(glommio::io::ReadResult),
    Pool(Bytes),
}

impl std::ops::Deref for Chunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Chunk::Uring(r) => r,
            Chunk::Pool(b) => b,
        }
    }
}

async fn read_aligned(f: &Rc<DmaFile>, pos: u64, len: usize) -> io::Result<Chunk> {
    let left = POOL_READS_LEFT.with(|c| c.get());
    if left == 0 {
        let r = if crate::faults::uring_read_refused() {
            Err(glommio::GlommioError::EnhancedIoError {
                source: io::Error::from_raw_os_error(libc::EOPNOTSUPP),
                op: "Reading",
                path: None,
                fd: None,
            })
        } else {
            f.read_at_aligned(pos, len).await
        };
        match r {
            Ok(r) => {
                count(|p| p.uring += 1);
                return Ok(Chunk::Uring(r));
            }
            Err(glommio::GlommioError::EnhancedIoError { source, .. })
                if source.raw_os_error() == Some(libc::EOPNOTSUPP) =>
            {
                count(|p| p.refusals += 1);
                POOL_READS_LEFT.with(|c| c.set(POOL_READS_AFTER_REFUSAL));
                static WARNED: std::sync::atomic::AtomicBool =
                    std::sync::atomic::AtomicBool::new(false);
                if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(
                        "the device refused an io_uring O_DIRECT read (EOPNOTSUPP); reads fall back \
                         to the blocking-thread pool for a while after each refusal"
                    );
                }
            }
            Err(e) => return Err(glommio_io(e)),
        }
    } else {
        POOL_READS_LEFT.with(|c| c.set(left - 1));
    }
    pread_on_pool(f, pos, len).await.map(Chunk::Pool)
}

thread_local! {
    /// Reads this shard may have queued or running on its blocking pool at
    /// once, over all its logs.
    static POOL_READ_SLOTS: Rc<glommio::sync::Semaphore> = Rc::new(glommio::sync::Semaphore::new(
        sluice_tuning::limits::POOL_READS_IN_FLIGHT_MAX as u64,
    ));
}

/// An O_DIRECT `pread` on the executor's blocking-thread pool, never on the
/// shard thread (counted in `ReadPaths::pool`). The descriptor is
/// duplicated first so the read stays valid even if the file is closed
/// while it runs.
async fn pread_on_pool(f: &Rc<DmaFile>, pos: u64, len: usize) -> io::Result<Bytes> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    count(|p| p.pool += 1);
    let slots = POOL_READ_SLOTS.with(Rc::clone);
    let _slot = slots
        .acquire_permit(1)
        .await
        .map_err(|e| io::Error::other(format!("pool read slots closed: {e}")))?;
    // SAFETY: dup of a descriptor this file owns and keeps open meanwhile.
    let fd = unsafe { libc::dup(f.as_raw_fd()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    glommio::executor()
        .spawn_blocking(move || {
            let mut buf = AlignedBuf::new(len)?;
            let mut done = 0usize;
            while done < len {
                // SAFETY: `buf` holds `len` writable bytes, aligned for
                // O_DIRECT (so is every `done` short of a short read, which
                // ends the loop), and `fd` is open for the duration.
                let n = unsafe {
                    libc::pread(
                        fd.as_raw_fd(),
                        buf.ptr.as_ptr().add(done).cast(),
                        len - done,
                        (pos + done as u64) as libc::off_t,
                    )
                };
                match n {
                    // A short read of a regular file is its end (and the
                    // next position would no longer be aligned).
                    n if n >= 0 && (n as usize) < len - done => {
                        done += n as usize;
                        break;
                    }
                    n if n > 0 => done += n as usize,
                    _ => {
                        let e = io::Error::last_os_error();
                        if e.kind() != io::ErrorKind::Interrupted {
                            return Err(e);
                        }
                    }
                }
            }
            buf.filled = done;
            Ok(Bytes::from_owner(buf))
        })
        .await
}

/// A page-aligned buffer for a read on the pool: from the allocator's
/// direct-I/O region where it fits one (see `dma_memory`), so it is
/// physically contiguous, and not zeroed first. Only the bytes the read
/// filled are ever exposed.
struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    layout: std::alloc::Layout,
    filled: usize,
}

// SAFETY: it owns its allocation outright; nothing else points into it.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    fn new(len: usize) -> io::Result<AlignedBuf> {
        let layout = std::alloc::Layout::from_size_align(len.max(ALIGN), ALIGN)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = std::ptr::NonNull::new(unsafe { std::alloc::alloc(layout) })
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        Ok(AlignedBuf {
            ptr,
            layout,
            filled: 0,
        })
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the first `filled` bytes were written by the read.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.filled) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// Lists the names in a directory (on the blocking pool).
pub(crate) async fn list_dir(path: &Path) -> io::Result<Vec<String>> {
    let path = path.to_path_buf();
    glommio::executor()
        .spawn_blocking(move || {
            let mut names = Vec::new();
            for e in std::fs::read_dir(&path)? {
                if let Some(n) = e?.file_name().to_str() {
                    names.push(n.to_string());
                }
            }
            Ok(names)
        })
        .await
}

/// Creates a directory and its parents (on the blocking pool) and returns
/// its absolute path (the runtime's directory calls need one).
/// Creates the directory and any missing parents, and syncs the parent
/// of each one it created, so that a new partition's directory survives a
/// power cut along with the files synced into it.
pub(crate) async fn create_dir_all(path: &Path) -> io::Result<PathBuf> {
    let path = path.to_path_buf();
    glommio::executor()
        .spawn_blocking(move || {
            let mut missing = Vec::new();
            let mut p = path.as_path();
            while !p.exists() {
                missing.push(p.to_path_buf());
                match p.parent() {
                    Some(q) if !q.as_os_str().is_empty() => p = q,
                    _ => break,
                }
            }
            std::fs::create_dir_all(&path)?;
            for dir in missing.iter().rev() {
                let parent = match dir.parent() {
                    Some(q) if !q.as_os_str().is_empty() => q,
                    _ => Path::new("."),
                };
                std::fs::File::open(parent)?.sync_all()?;
            }
            std::fs::canonicalize(&path)
        })
        .await
}

/// Makes the directory's entries (created or removed files) durable.
pub(crate) async fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = glommio::io::Directory::open(path)
        .await
        .map_err(glommio_io)?;
    let r = dir.sync().await.map_err(glommio_io);
    let _ = dir.close().await;
    if r.is_ok() {
        crate::faults::power::on_sync_dir(path);
    }
    r
}

pub(crate) async fn remove_file(path: &Path) -> io::Result<()> {
    crate::faults::power::on_remove(path);
    match glommio::io::remove(path).await.map_err(glommio_io) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Reads a small file whole; `None` when it does not exist.
pub(crate) async fn read_small_file(path: &Path) -> io::Result<Option<Bytes>> {
    let f = match DirectFile::open(path, false).await {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let size = f.size().await?;
    let r = f.read_range(0, size as usize, 1 << 20).await;
    let _ = f.file.close_rc().await;
    r.map(Some)
}

/// Writes `data` at the aligned position `pos` of a small file whose
/// earlier bytes are already on disk. With `exact`, the file is cut to
/// `total_len` (dropping the zero padding of the last page and anything
/// stale after it) and synced.
pub(crate) async fn write_small_file(
    path: &Path,
    data: &[u8],
    pos: usize,
    total_len: usize,
    exact: bool,
) -> io::Result<()> {
    assert_eq!(pos % ALIGN, 0);
    assert_eq!(pos + data.len(), total_len);
    let f = DirectFile::open(path, true).await?;
    let r = async {
        if !data.is_empty() {
            let mut buf = f.alloc(align_up(data.len() as u64) as usize);
            let b = buf.as_bytes_mut();
            b[..data.len()].copy_from_slice(data);
            b[data.len()..].fill(0);
            f.write(Rc::new(buf), pos as u64).await?;
        }
        if exact {
            f.truncate(total_len as u64).await?;
            f.fdatasync().await?;
        }
        Ok(())
    }
    .await;
    let _ = f.file.close_rc().await;
    r
}

/// Paths of one segment's files, named by base offset like Kafka's.
pub(crate) fn segment_paths(dir: &Path, base: i64) -> (PathBuf, PathBuf, PathBuf) {
    let stem = format!("{base:020}");
    (
        dir.join(format!("{stem}.log")),
        dir.join(format!("{stem}.index")),
        dir.join(format!("{stem}.timeindex")),
    )
}

/// The base offset a segment file name stands for.
pub(crate) fn parse_segment_name(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

//! One memory-mapped commit log file.
//!
//! The single appender (holding the commit log's append lock) copies bytes
//! into the mapping and then publishes the new write position with `Release`;
//! readers load it with `Acquire` and only ever look below it, so writer and
//! readers touch disjoint bytes. That is why a raw mapping (`MmapRaw`) is
//! shared without a lock.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use crate::error::{Result, StoreError};

pub const OS_PAGE_SIZE: u64 = 4096;

/// Suffix of a file being created (see [`MappedFile::create`]); leftovers are deleted at open.
pub const ALLOC_SUFFIX: &str = ".alloc";

/// The name `path` is created under before it has its full size (see
/// [`MappedFile::create`]).
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(ALLOC_SUFFIX);
    PathBuf::from(name)
}

/// Gives `[from, to)` of `file` its blocks (`fallocate`, size kept), so that
/// writes there never allocate: for a file written through a mapping, a
/// store into a page the disk cannot allocate kills the process with
/// SIGBUS, and allocating first turns a full disk into this error instead.
/// Filesystems without fallocate keep their holes.
pub(crate) fn allocate_blocks(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    if to <= from {
        return Ok(());
    }
    // SAFETY: plain syscall on an owned fd.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_KEEP_SIZE,
            from as libc::off_t,
            (to - from) as libc::off_t,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
        return Ok(());
    }
    Err(err)
}

/// A commit log file of fixed size, named by its start offset.
pub struct MappedFile {
    path: PathBuf,
    file: File,
    map: MmapRaw,
    start_offset: u64,
    size: u64,
    /// Bytes written (relative to the file start) and visible to readers.
    wrote: AtomicU64,
    /// Bytes known durable.
    flushed: AtomicU64,
    /// Bytes from the file start known written with zeros or data (not
    /// left as fallocate's unwritten extents): see [`crate::zero_ahead`].
    zeroed_to: AtomicU64,
    locked: AtomicBool,
}

/// 20-digit zero-padded file name for a start offset.
pub fn file_name(offset: u64) -> String {
    format!("{offset:020}")
}

/// How [`MappedFile::warm`] populates pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarmPages {
    /// Read every page into the page cache (`MADV_POPULATE_READ`), dirtying
    /// nothing. For appends written with write(2), which then find their
    /// pages cached (written extents come from [`crate::zero_ahead`]), and
    /// for ASYNC_FLUSH appends through the mapping, where
    /// [`crate::prefault`] makes a window ahead of the writer writable.
    /// No disk writes: nothing for the kernel to write back twice, and
    /// warming the next file does not compete with the current one's syncs.
    Read,
    /// Populate every page writable (`MADV_POPULATE_WRITE`, falling back to
    /// touching one byte per page), for appends copied into the mapping,
    /// which then never fault. With `flush_pages > 0` (SYNC_FLUSH, as
    /// RocketMQ does) the zeros are also written to disk every that many
    /// pages, so later syncs overwrite written blocks.
    Write { flush_pages: u64 },
}

impl MappedFile {
    /// Creates (or reuses, if present with the right size) the file for
    /// `start_offset`, preallocating its blocks with `fallocate` so later
    /// writes do not allocate. A new file is sized under a temporary name
    /// and renamed into place, so a crash never leaves a short commit log file.
    pub fn create(dir: &Path, start_offset: u64, size: u64, preallocate: bool) -> Result<Self> {
        let path = dir.join(file_name(start_offset));
        if let Ok(meta) = std::fs::metadata(&path) {
            if meta.len() == size {
                return Self::open(&path, start_offset, size);
            }
        }
        let tmp = temp_path(&path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| StoreError::io(&tmp, e))?;
        let sized = file
            .set_len(size)
            .and_then(|()| allocate_blocks(&file, 0, if preallocate { size } else { 0 }));
        if let Err(e) = sized {
            // Give back what a partial allocation took (ENOSPC).
            let _ = std::fs::remove_file(&tmp);
            return Err(StoreError::io(&tmp, e));
        }
        std::fs::rename(&tmp, &path).map_err(|e| StoreError::io(&path, e))?;
        // The file's name must be as durable as the records synced into it.
        crate::dir::sync_dir(Some(dir))?;
        Self::map(path, file, start_offset, size)
    }

    /// Opens an existing file, which must have exactly `size` bytes.
    pub fn open(path: &Path, start_offset: u64, size: u64) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| StoreError::io(path, e))?;
        let len = file.metadata().map_err(|e| StoreError::io(path, e))?.len();
        if len != size {
            return Err(StoreError::corruption(
                path,
                format!("file is {len} bytes, the configured size is {size}"),
            ));
        }
        Self::map(path.to_path_buf(), file, start_offset, size)
    }

    fn map(path: PathBuf, file: File, start_offset: u64, size: u64) -> Result<Self> {
        let map = MmapOptions::new()
            .len(size as usize)
            .map_raw(&file)
            .map_err(|e| StoreError::io(&path, e))?;
        Ok(MappedFile {
            path,
            file,
            map,
            start_offset,
            size,
            wrote: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            zeroed_to: AtomicU64::new(0),
            locked: AtomicBool::new(false),
        })
    }

    /// Warms the file: every page populated, then `mlock` and
    /// `madvise(WILLNEED)`. How pages are populated depends on how appends
    /// reach the file (see [`WarmPages`]). An `mlock` refused by
    /// RLIMIT_MEMLOCK is a warning, never an error.
    ///
    /// Works in 512 KiB steps and stops early, returning `false`, once
    /// `abort` is set: a writer that needs the file now takes it part-warmed
    /// (its remaining pages fault on first write) instead of waiting.
    pub fn warm(&self, how: WarmPages, abort: &AtomicBool) -> Result<bool> {
        let (advice, write_through_pages) = match how {
            WarmPages::Read => (libc::MADV_POPULATE_READ, 0),
            WarmPages::Write { flush_pages } => (libc::MADV_POPULATE_WRITE, flush_pages),
        };
        // Chunks small enough that an abort is honoured within about a
        // millisecond (512 KiB: 128 first touches of 2.5-5 µs).
        const CHUNK_PAGES: u64 = 128;
        let ptr = self.map.as_mut_ptr();
        let len = self.size as usize;
        let pages = self.size / OS_PAGE_SIZE;
        let mut synced_to = 0u64; // pages written through so far
        let mut page = 0u64;
        while page < pages {
            if abort.load(Ordering::Acquire) {
                if write_through_pages > 0 {
                    // Touched zeros not yet synced go out with the next flush.
                    self.set_zeroed_to(page * OS_PAGE_SIZE);
                }
                return Ok(false);
            }
            let end = (page + CHUNK_PAGES).min(pages);
            let (from, n) = (
                (page * OS_PAGE_SIZE) as usize,
                ((end - page) * OS_PAGE_SIZE) as usize,
            );
            let populated = self.advise(from as u64, n as u64, advice);
            match how {
                WarmPages::Read if !populated => {
                    for p in page..end {
                        // SAFETY: within the mapping.
                        unsafe { std::ptr::read_volatile(ptr.add((p * OS_PAGE_SIZE) as usize)) };
                    }
                }
                WarmPages::Write { .. } if !populated || write_through_pages > 0 => {
                    for p in page..end {
                        // SAFETY: within the mapping.
                        unsafe {
                            std::ptr::write_volatile(ptr.add((p * OS_PAGE_SIZE) as usize), 0)
                        };
                    }
                }
                _ => {}
            }
            if write_through_pages > 0 && (end - synced_to >= write_through_pages || end == pages) {
                let at = (synced_to * OS_PAGE_SIZE) as usize;
                self.map
                    .flush_range(at, ((end - synced_to) * OS_PAGE_SIZE) as usize)
                    .map_err(|e| StoreError::io(&self.path, e))?;
                synced_to = end;
            }
            page = end;
        }
        if write_through_pages > 0 {
            self.set_zeroed_to(self.size);
        }
        // SAFETY: the range is our own mapping.
        let rc = unsafe { libc::mlock(ptr as *const libc::c_void, len) };
        if rc == 0 {
            self.locked.store(true, Ordering::Relaxed);
        } else {
            tracing::warn!(
                "mlock of {} refused ({}); continuing without it",
                self.path.display(),
                std::io::Error::last_os_error()
            );
        }
        self.advise(0, self.size, libc::MADV_WILLNEED);
        Ok(true)
    }

    /// Populates `[from, to)` writable (`MADV_POPULATE_WRITE`), page aligned;
    /// advisory: failure only means the writer takes the faults itself.
    pub fn populate(&self, from: u64, to: u64) {
        let from = from / OS_PAGE_SIZE * OS_PAGE_SIZE;
        let to = to.min(self.size);
        if from >= to {
            return;
        }
        // In steps: each call holds the mmap lock for reading, and a long
        // hold would stall any mmap/munmap (another file's roll or release)
        // and, queued behind that, every page fault of the writer.
        const STEP: u64 = 512 << 10;
        let mut at = from;
        while at < to {
            let n = (to - at).min(STEP);
            self.advise(at, n, libc::MADV_POPULATE_WRITE);
            at += n;
        }
    }

    /// `madvise(advice)` on `[from, from + len)` of the mapping (a populate
    /// or a hint: it never changes contents); whether the kernel took it.
    fn advise(&self, from: u64, len: u64, advice: libc::c_int) -> bool {
        debug_assert!(from + len <= self.size);
        // SAFETY: the range lies within our own mapping, and populating or
        // hinting pages leaves their contents as they are.
        unsafe {
            libc::madvise(
                self.map.as_mut_ptr().add(from as usize) as *mut libc::c_void,
                len as usize,
                advice,
            ) == 0
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn start_offset(&self) -> u64 {
        self.start_offset
    }
    pub fn size(&self) -> u64 {
        self.size
    }
    /// Bytes written and readable.
    pub fn wrote(&self) -> u64 {
        self.wrote.load(Ordering::Acquire)
    }
    pub fn flushed(&self) -> u64 {
        self.flushed.load(Ordering::Acquire)
    }
    pub fn is_full(&self) -> bool {
        self.wrote() >= self.size
    }

    /// Copies `data` to `pos` through the mapping.
    ///
    /// The caller must be the only writer (it holds the append lock) and `pos`
    /// must be at or beyond the published write position, so no reader looks
    /// at these bytes yet. Call [`MappedFile::publish`] afterwards.
    pub fn write_mapped(&self, pos: u64, data: &[u8]) {
        assert!(pos + data.len() as u64 <= self.size, "write past file end");
        // SAFETY: bounds checked above; exclusive per the contract.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.map.as_mut_ptr().add(pos as usize),
                data.len(),
            )
        };
    }

    /// Writes `data` to `pos` with `pwrite(2)`; the shared mapping sees the same
    /// page cache, so readers find it there. Same contract as `write_mapped`.
    pub fn write_through_fd(&self, pos: u64, data: &[u8]) -> Result<()> {
        self.file
            .write_all_at(data, pos)
            .map_err(|e| StoreError::io(&self.path, e))
    }

    /// Bytes from the start known written (see [`crate::zero_ahead`]).
    pub fn zeroed_to(&self) -> u64 {
        self.zeroed_to.load(Ordering::Acquire)
    }

    pub(crate) fn set_zeroed_to(&self, to: u64) {
        self.zeroed_to.fetch_max(to, Ordering::AcqRel);
    }

    /// Starts writeback of `[from, to)` without waiting for it
    /// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`); advisory, so a failure
    /// is ignored.
    pub(crate) fn start_writeback(&self, from: u64, to: u64) {
        let _ = self.sync_range(from, to, libc::SYNC_FILE_RANGE_WRITE);
    }

    /// Writes `[from, to)` out and waits for it
    /// (`sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)`). Not a durability
    /// point: the file's metadata is not written (see [`MappedFile::fdatasync`]).
    pub(crate) fn write_out(&self, from: u64, to: u64) -> Result<()> {
        self.sync_range(
            from,
            to,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        )
    }

    /// `sync_file_range(flags)` over `[from, to)`; nothing for an empty range.
    fn sync_range(&self, from: u64, to: u64, flags: libc::c_uint) -> Result<()> {
        // A zero length would mean "to the end of the file" to the kernel.
        if to <= from {
            return Ok(());
        }
        // SAFETY: plain syscall on our own fd; it does not change contents.
        let rc = unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                from as libc::off64_t,
                (to - from) as libc::off64_t,
                flags,
            )
        };
        if rc != 0 {
            return Err(StoreError::io(&self.path, std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Makes bytes below `wrote` visible to readers.
    pub fn publish(&self, wrote: u64) {
        self.wrote.store(wrote, Ordering::Release);
    }

    /// Sets write and flush positions after recovery.
    pub fn set_positions(&self, wrote: u64, flushed: u64) {
        self.wrote.store(wrote, Ordering::Release);
        self.flushed.store(flushed, Ordering::Release);
    }

    pub(crate) fn set_flushed(&self, flushed: u64) {
        self.flushed.fetch_max(flushed, Ordering::AcqRel);
    }

    /// Readable bytes `[pos, pos+len)`, or `None` if not yet written.
    pub fn read(&self, pos: u64, len: u64) -> Option<&[u8]> {
        if pos.checked_add(len)? > self.wrote() {
            return None;
        }
        // SAFETY: below the published write position nothing is written again
        // (except by recovery, which runs before readers exist).
        Some(unsafe {
            std::slice::from_raw_parts(self.map.as_ptr().add(pos as usize), len as usize)
        })
    }

    /// The whole file regardless of the write position; for recovery and
    /// offline tools, which run while no one appends.
    pub fn whole(&self) -> &[u8] {
        // SAFETY: see the contract above.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.size as usize) }
    }

    /// Zeroes `[pos, end)` (recovery: removes a torn tail) and syncs it.
    pub fn zero_from(&self, pos: u64) -> Result<()> {
        if pos >= self.size {
            return Ok(());
        }
        let whole = self.whole();
        // Only zero up to the last non-zero byte: a fresh file's tail is zero already.
        let Some(last) = whole[pos as usize..].iter().rposition(|b| *b != 0) else {
            return Ok(());
        };
        let end = pos + last as u64 + 1;
        // SAFETY: recovery runs single-threaded before readers exist.
        unsafe {
            std::ptr::write_bytes(
                self.map.as_mut_ptr().add(pos as usize),
                0,
                (end - pos) as usize,
            )
        };
        self.map
            .flush_range(pos as usize, (end - pos) as usize)
            .map_err(|e| StoreError::io(&self.path, e))
    }

    pub fn msync(&self, from: u64, to: u64) -> Result<()> {
        if to <= from {
            return Ok(());
        }
        self.map
            .flush_range(from as usize, (to - from) as usize)
            .map_err(|e| StoreError::io(&self.path, e))
    }

    pub fn fdatasync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| StoreError::io(&self.path, e))
    }

    pub fn raw_fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    /// Whether the pages are locked in memory (a warm-up's `mlock` took).
    pub fn is_locked(&self) -> bool {
        self.locked.load(Ordering::Relaxed)
    }

    /// Unlocks the pages; the mapping itself goes with the last `Arc`.
    pub fn munlock(&self) {
        if self.locked.swap(false, Ordering::Relaxed) {
            // SAFETY: our own mapping.
            unsafe { libc::munlock(self.map.as_ptr() as *const libc::c_void, self.size as usize) };
        }
    }

    /// Deletes the file from disk; the mapping stays valid for existing readers.
    pub fn delete(&self) -> Result<()> {
        self.munlock();
        std::fs::remove_file(&self.path).map_err(|e| StoreError::io(&self.path, e))
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        self.munlock();
    }
}

/// Parses a 20-digit file name into its start offset.
pub fn parse_file_name(name: &str) -> Option<u64> {
    (name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()))
        .then(|| name.parse().ok())
        .flatten()
}

#[cfg(test)]
mod warm_tests {
    use super::*;

    #[test]
    fn read_warming_caches_pages_without_writing_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let size = 4u64 << 20;
        let f = MappedFile::create(dir.path(), 0, size, true).expect("create");
        assert!(f
            .warm(WarmPages::Read, &AtomicBool::new(false))
            .expect("warm"));
        // Nothing was written: the zero-fill ahead still has all of it to do.
        assert_eq!(f.zeroed_to(), 0);
        // Every page is resident.
        let pages = (size / OS_PAGE_SIZE) as usize;
        let mut resident = vec![0u8; pages];
        // SAFETY: our own mapping, a vector of one byte per page.
        let rc = unsafe {
            libc::mincore(
                f.map.as_mut_ptr() as *mut libc::c_void,
                size as usize,
                resident.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0);
        assert!(resident.iter().all(|r| r & 1 == 1));
    }
}

//! Zero-fill ahead of the writer, for appends written with write(2).
//!
//! A commit log file is preallocated with `fallocate`, which leaves its
//! extents *unwritten*. The first write into such an extent makes the
//! filesystem convert it, and the fdatasync that follows must then also write
//! the inode: on this machine's ext4 that is one more synchronous device
//! round trip per flush — 4.4 KiB pwrite + fdatasync measured 282 µs at p50
//! into unwritten extents against 189 µs into blocks written before. Warming
//! a whole file (`warmMapedFileEnable`) writes all of it up front; this keeps
//! just a little ahead of the writer instead: whenever the write position
//! gets within [`LEAD`] of the zeroed end, the next [`CHUNK`] is written with
//! zeros through the file descriptor and its writeback started
//! (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does not wait). Later
//! fdatasyncs then overwrite written blocks, and the zeroed pages stay in the
//! page cache so the record writes into them need no read.
//!
//! It runs on the appending thread under the append lock, which is what makes
//! it safe: zeros are only ever written at or past the write position, by the
//! one thread that moves it. It costs one pwrite of [`CHUNK`] bytes of zeros
//! (about 50 µs) per [`CHUNK`] bytes appended.
//!
//! That still leaves the conversion on the flush path: the fdatasync after a
//! chunk's write-back has started waits for it and writes the converted
//! extents' metadata, so under SYNC_FLUSH one group commit in every few paid
//! hundreds of microseconds more. The background file allocator therefore
//! zero-fills each new file whole before handing it over ([`fill_file`]),
//! while it is nobody's current file, and keeping ahead only covers what it
//! did not get to (a file taken early, a file reopened after a restart).
//!
//! Under SYNC_FLUSH load that fill competes with the group commits: every
//! fdatasync also has to get the fill's writes out of the device's cache,
//! and a 1 MiB step in the device queue holds up the group behind it (W = 64
//! for 10 s over two rolls: p99 1.7-1.8 ms, against under 0.9 ms while no
//! fill runs). So while the log is busy the allocator leaves the fill to the
//! commits ([`NextFileFill`]): each staged commit writes a share of zeros
//! into the next file, just enough for it to be full when the current one
//! is; they reach the disk with that group's flush, a steady few dozen KiB
//! per group instead of megabyte bursts. The allocator fills at full speed
//! whenever commits have not filled for [`QUIET`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::Result;
use crate::mapped_file::{MappedFile, OS_PAGE_SIZE};

/// Bytes zeroed at a time.
pub const CHUNK: u64 = 256 << 10;
/// How far ahead of the write position the zeroed end is kept.
pub const LEAD: u64 = 1 << 20;

static ZEROS: [u8; CHUNK as usize] = [0; CHUNK as usize];

/// Called under the append lock after bytes up to `end` of `file` were
/// written: zero-fills ahead if the zeroed end is less than [`LEAD`] away.
/// A failure only costs the optimisation (logged, then off for this file):
/// the append itself has succeeded.
pub fn keep_ahead(file: &MappedFile, end: u64) {
    let zeroed = file.zeroed_to();
    if zeroed >= file.size() || zeroed >= end + LEAD {
        return;
    }
    // Never the page holding `end`: it is cached already, with data in it.
    let from = zeroed.max(end.next_multiple_of(OS_PAGE_SIZE));
    let to = (end + LEAD + CHUNK)
        .next_multiple_of(OS_PAGE_SIZE)
        .min(file.size());
    if let Err(e) = write_zeros(file, from, to) {
        tracing::warn!("zero-fill ahead of the commit log writer stopped for this file: {e}");
        file.set_zeroed_to(file.size());
        return;
    }
    file.start_writeback(from, to);
    file.set_zeroed_to(to);
}

/// Writes zeros over `[from, to)` of `file` through its descriptor, at most
/// [`CHUNK`] bytes per call.
fn write_zeros(file: &MappedFile, from: u64, to: u64) -> Result<()> {
    let mut at = from;
    while at < to {
        let n = (to - at).min(CHUNK);
        file.write_through_fd(at, &ZEROS[..n as usize])?;
        at += n;
    }
    Ok(())
}

/// Bytes [`fill_file`] writes and waits for at a time: the disk sees a
/// steady stream of writes of this size rather than a whole file's burst
/// ahead of the current file's syncs.
pub const FILL_STEP: u64 = 1 << 20;

/// Writes zeros through the file descriptor over all of `file` (a file no
/// writer has yet), [`FILL_STEP`] bytes at a time, each written out before the
/// next, then fdatasyncs it so the converted extents are on disk too. While
/// commits fill it (`shared`, see [`NextFileFill`]) it only waits. Stops
/// early, returning `false`, once `abort` is set; what was filled is
/// recorded (`zeroed_to`) either way, and [`keep_ahead`] goes on from there.
pub fn fill_file(file: &MappedFile, abort: &AtomicBool, shared: &NextFileFill) -> Result<bool> {
    loop {
        if abort.load(Ordering::Acquire) {
            return Ok(false);
        }
        // Commits may have moved it.
        let at = file.zeroed_to();
        if at >= file.size() {
            break;
        }
        if shared.commits_filling() {
            std::thread::sleep(YIELD_NAP);
            continue;
        }
        let end = (at + FILL_STEP).min(file.size());
        write_zeros(file, at, end)?;
        file.write_out(at, end)?;
        file.set_zeroed_to(end);
    }
    file.fdatasync()?;
    Ok(true)
}

/// How long after the last commit that filled the allocator takes the
/// fill back.
pub const QUIET: Duration = Duration::from_millis(50);
/// The allocator's nap while commits fill.
const YIELD_NAP: Duration = Duration::from_millis(1);
/// Most zeros one commit writes (a commit far behind its share, as when the
/// next file came late, catches up over several groups).
pub const MOST_PER_COMMIT: u64 = 1 << 20;

/// The next commit log file's zero-fill, shared by the allocator, which
/// fills it while the log is quiet ([`fill_file`]), and the SYNC_FLUSH
/// commits, which fill a share of it with every group while the log is
/// busy ([`NextFileFill::after_commit`]).
pub struct NextFileFill {
    /// The file being filled, from its creation until it is full or
    /// handed over.
    file: Mutex<Option<Arc<MappedFile>>>,
    /// When a commit last wrote zeros, in nanoseconds since `epoch` (0:
    /// never).
    last_commit_fill: AtomicU64,
    epoch: Instant,
    /// [`QUIET`], or another span for tests.
    quiet: Duration,
}

impl Default for NextFileFill {
    fn default() -> Self {
        NextFileFill::with_quiet(QUIET)
    }
}

impl NextFileFill {
    fn with_quiet(quiet: Duration) -> Self {
        NextFileFill {
            file: Mutex::new(None),
            last_commit_fill: AtomicU64::new(0),
            epoch: Instant::now(),
            quiet,
        }
    }

    /// `file` is being filled now (by the allocator, before any writer can
    /// have it).
    pub(crate) fn begin(&self, file: Arc<MappedFile>) {
        *self.file.lock() = Some(file);
    }

    /// The fill of the file given to `begin` has ended (full, handed over,
    /// or failed).
    pub(crate) fn end(&self) {
        *self.file.lock() = None;
    }

    /// Whether commits have filled within [`QUIET`].
    fn commits_filling(&self) -> bool {
        let last = self.last_commit_fill.load(Ordering::Acquire);
        last != 0 && self.now_ns().saturating_sub(last) < self.quiet.as_nanos() as u64
    }

    fn now_ns(&self) -> u64 {
        // +1: a fill in the first nanosecond is not "never".
        self.epoch.elapsed().as_nanos() as u64 + 1
    }

    /// A staged commit wrote `bytes` ending at absolute offset
    /// `committed_end` of a log of `file_size`-byte files: writes zeros
    /// into the next file in proportion (its unfilled bytes over the bytes
    /// left in the current file, plus a tenth, at most [`MOST_PER_COMMIT`])
    /// and starts their write-back, so the group's flush takes them along.
    /// Never touches a file at or below `committed_end`, which may hold
    /// records (commits are the only writers of staged records, and they
    /// call this in order). A failed write only costs the optimisation: it
    /// is logged, and the allocator fills the rest.
    pub fn after_commit(&self, committed_end: u64, bytes: u64, file_size: u64) {
        if bytes == 0 || file_size == 0 {
            return;
        }
        let Some(next) = self.file.lock().clone() else {
            return;
        };
        if next.start_offset() <= committed_end {
            return;
        }
        let from = next.zeroed_to();
        if from >= next.size() {
            return;
        }
        let left_here = file_size - committed_end % file_size;
        let share = (u128::from(bytes) * u128::from(next.size() - from) * 11
            / (10 * u128::from(left_here))) as u64;
        let to = (from + share.clamp(OS_PAGE_SIZE, MOST_PER_COMMIT))
            .next_multiple_of(OS_PAGE_SIZE)
            .min(next.size());
        self.last_commit_fill
            .store(self.now_ns(), Ordering::Release);
        match write_zeros(&next, from, to) {
            Ok(()) => {
                next.start_writeback(from, to);
                next.set_zeroed_to(to);
            }
            Err(e) => {
                tracing::warn!("zero-filling the next commit log file from a commit failed: {e}");
                self.last_commit_fill.store(0, Ordering::Release);
                self.end();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_file_zeroes_a_whole_file_and_stops_when_aborted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let size = 3 * FILL_STEP;
        let f = MappedFile::create(dir.path(), 0, size, true).expect("create");
        assert!(fill_file(&f, &AtomicBool::new(false), &NextFileFill::default()).expect("fill"));
        assert_eq!(f.zeroed_to(), size);
        let on_disk = std::fs::read(f.path()).expect("read");
        assert_eq!(on_disk.len() as u64, size);
        assert!(on_disk.iter().all(|b| *b == 0));

        let g = MappedFile::create(dir.path(), size, size, true).expect("create");
        assert!(!fill_file(&g, &AtomicBool::new(true), &NextFileFill::default()).expect("fill"));
        assert_eq!(g.zeroed_to(), 0, "an aborted fill claims nothing");
        // keep_ahead takes over from where the fill stopped.
        keep_ahead(&g, 0);
        assert!(g.zeroed_to() >= LEAD);
    }

    /// A commit fills the next file in proportion to what is left of both
    /// files, never a file that may hold its records, and none once the
    /// fill has ended.
    #[test]
    fn a_commit_fills_its_share_of_the_next_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let size = 4 * FILL_STEP;
        let current = Arc::new(MappedFile::create(dir.path(), 0, size, true).expect("create"));
        let next = Arc::new(MappedFile::create(dir.path(), size, size, true).expect("create"));
        std::fs::write(next.path(), vec![7u8; size as usize]).expect("dirty the next file");
        let fill = NextFileFill::default();
        fill.begin(next.clone());
        // Half of the current file left, all of the next: 2.2 x the bytes.
        fill.after_commit(size / 2, 64 << 10, size);
        let want = ((64u64 << 10) * 22 / 10).next_multiple_of(OS_PAGE_SIZE);
        assert_eq!(next.zeroed_to(), want);
        let on_disk = std::fs::read(next.path()).expect("read");
        assert!(on_disk[..want as usize].iter().all(|b| *b == 0));
        assert!(on_disk[want as usize..].iter().all(|b| *b == 7));
        assert!(fill.commits_filling());

        // Records may already be committed into a file at or below the end.
        fill.begin(current.clone());
        fill.after_commit(0, 64 << 10, size);
        fill.after_commit(size / 2, 64 << 10, size);
        assert_eq!(current.zeroed_to(), 0);

        fill.begin(next.clone());
        fill.end();
        fill.after_commit(size / 2, 64 << 10, size);
        assert_eq!(next.zeroed_to(), want);
    }

    /// While commits fill the allocator only waits; once they stop it fills
    /// the rest.
    #[test]
    fn the_allocator_leaves_the_fill_to_busy_commits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let size = 8 * FILL_STEP;
        let next = Arc::new(MappedFile::create(dir.path(), size, size, true).expect("create"));
        let fill = Arc::new(NextFileFill::with_quiet(Duration::from_millis(300)));
        fill.begin(next.clone());
        // One page per commit: a whole file left in the current one.
        fill.after_commit(0, 1, size);
        let allocator = {
            let (fill, next) = (fill.clone(), next.clone());
            std::thread::spawn(move || fill_file(&next, &AtomicBool::new(false), &fill))
        };
        let busy_until = Instant::now() + Duration::from_millis(100);
        let mut commits = 1;
        while Instant::now() < busy_until {
            fill.after_commit(0, 1, size);
            commits += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
        // Every zero so far came from the commits, a page each (an
        // allocator step would be FILL_STEP).
        assert_eq!(next.zeroed_to(), commits * OS_PAGE_SIZE);
        let done = allocator.join().expect("allocator thread").expect("fill");
        assert!(done);
        assert_eq!(next.zeroed_to(), size);
    }

    #[test]
    fn zeroes_ahead_in_chunks_and_never_behind_the_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let size = 4 * LEAD;
        let f = MappedFile::create(dir.path(), 0, size, true).expect("create");
        let mut end = 0u64;
        let mut writes = 0;
        let mut last = 0;
        while end < size - 2000 {
            let data = vec![0xAB; 1500];
            f.write_through_fd(end, &data).expect("write");
            end += data.len() as u64;
            f.publish(end);
            keep_ahead(&f, end);
            let z = f.zeroed_to();
            assert!(z == size || z >= end + LEAD, "zeroed to {z} at {end}");
            assert!(
                z <= end + LEAD + CHUNK + OS_PAGE_SIZE,
                "zeroed to {z} at {end}"
            );
            if z != last {
                writes += 1;
                last = z;
            }
        }
        assert_eq!(f.zeroed_to(), size);
        // One zeroing per chunk or so, not per append.
        assert!(writes <= (size / CHUNK + 1) as usize, "{writes} zeroings");
        // Every record byte survived the zeros written ahead of it.
        let all = f.read(0, end).expect("read");
        assert!(all.iter().all(|b| *b == 0xAB));
    }
}

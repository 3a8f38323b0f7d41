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

use std::sync::atomic::{AtomicBool, Ordering};

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
/// next, then fdatasyncs it so the converted extents are on disk too. Stops
/// early, returning `false`, once `abort` is set; what was filled is
/// recorded (`zeroed_to`) either way, and [`keep_ahead`] goes on from there.
pub fn fill_file(file: &MappedFile, abort: &AtomicBool) -> Result<bool> {
    let mut at = file.zeroed_to();
    while at < file.size() {
        if abort.load(Ordering::Acquire) {
            return Ok(false);
        }
        let end = (at + FILL_STEP).min(file.size());
        write_zeros(file, at, end)?;
        file.write_out(at, end)?;
        file.set_zeroed_to(end);
        at = end;
    }
    file.fdatasync()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_file_zeroes_a_whole_file_and_stops_when_aborted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let size = 3 * FILL_STEP;
        let f = MappedFile::create(dir.path(), 0, size, true).expect("create");
        assert!(fill_file(&f, &AtomicBool::new(false)).expect("fill"));
        assert_eq!(f.zeroed_to(), size);
        let on_disk = std::fs::read(f.path()).expect("read");
        assert_eq!(on_disk.len() as u64, size);
        assert!(on_disk.iter().all(|b| *b == 0));

        let g = MappedFile::create(dir.path(), size, size, true).expect("create");
        assert!(!fill_file(&g, &AtomicBool::new(true)).expect("fill"));
        assert_eq!(g.zeroed_to(), 0, "an aborted fill claims nothing");
        // keep_ahead takes over from where the fill stopped.
        keep_ahead(&g, 0);
        assert!(g.zeroed_to() >= LEAD);
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

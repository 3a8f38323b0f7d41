//! The disk's own ceilings, measured on the same filesystem as the store:
//! (a) 4 KiB append + fdatasync to a growing file, (b) 4 KiB overwrite +
//! fdatasync of already-written blocks, (c) sequential buffered write
//! bandwidth with a final fsync, and (d) msync of a page just written into a
//! mapping of a preallocated file (what the MSYNC mechanism pays).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::stats::{self, Latency};

const PAGE: usize = 4096;

/// How long and how much each probe measures.
#[derive(Debug, Clone)]
pub struct ProbeLimits {
    /// Most samples per latency probe.
    pub samples: usize,
    /// Longest time per latency probe.
    pub max_time: Duration,
    /// Bytes written by the sequential bandwidth probe.
    pub seq_bytes: u64,
}

/// What the disk itself can do.
#[derive(Debug, Clone, Serialize)]
pub struct DiskCeilings {
    /// (a) 4 KiB append + fdatasync, growing file.
    pub append_fdatasync: Latency,
    /// p50 of each later burst of probe (a), taken between runs (see
    /// [`Yardstick`]); empty without bursts.
    pub append_fdatasync_bursts_p50_us: Vec<f64>,
    /// Probe (a) over all its samples: the first probe's and every burst's.
    /// The SYNC_FLUSH targets are computed against this when present.
    pub append_fdatasync_pooled: Option<Latency>,
    /// (b) 4 KiB overwrite + fdatasync, already-written blocks.
    pub overwrite_fdatasync: Latency,
    /// (c) sequential buffered write incl. final fsync, MB/s (10^6 bytes).
    pub seq_write_mb_s: f64,
    pub seq_write_bytes: u64,
    /// (d) msync of the 4 KiB page just written into a mapping (fallocated file).
    pub msync_page: Latency,
}

fn open_new(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 131 + 7) as u8).collect()
}

fn timed_loop(
    limits: &ProbeLimits,
    stop: &AtomicBool,
    op: impl FnMut(usize) -> std::io::Result<()>,
) -> std::io::Result<Latency> {
    timed_loop_into(limits, stop, &mut stats::new_hist(), op)
}

/// [`timed_loop`], also recording every sample into `pool`.
fn timed_loop_into(
    limits: &ProbeLimits,
    stop: &AtomicBool,
    pool: &mut Histogram<u64>,
    mut op: impl FnMut(usize) -> std::io::Result<()>,
) -> std::io::Result<Latency> {
    let mut h = stats::new_hist();
    let start = Instant::now();
    for i in 0..limits.samples {
        if stop.load(Ordering::Relaxed) || start.elapsed() >= limits.max_time {
            break;
        }
        let t = Instant::now();
        op(i)?;
        let ns = t.elapsed().as_nanos() as u64;
        stats::record(&mut h, ns);
        stats::record(pool, ns);
    }
    Ok(Latency::from_hist(&h))
}

/// (a) append + fdatasync to a growing file; every sample is also
/// recorded into `pool`.
pub fn append_fdatasync(
    dir: &Path,
    limits: &ProbeLimits,
    stop: &AtomicBool,
    pool: &mut Histogram<u64>,
) -> std::io::Result<Latency> {
    let path = dir.join("probe-append");
    let f = open_new(&path)?;
    let buf = pattern(PAGE);
    let r = timed_loop_into(limits, stop, pool, |i| {
        f.write_all_at(&buf, (i * PAGE) as u64)?;
        f.sync_data()
    });
    drop(f);
    let _ = std::fs::remove_file(&path);
    r
}

/// The SYNC_FLUSH targets' yardstick, probe (a), measured at the start and
/// again in short bursts between the runs, all samples pooled.
///
/// Why: on this shared virtual disk the p50 of one probe moves between
/// about 135 and 260 µs from one minute to the next (24 bursts of 500
/// samples two seconds apart: 139-221 µs), while a run's own flushes move
/// far less, so a single probe at the start made the same build's W = 64
/// ratio swing between 0.56 and 0.92. Pooling samples spread over the
/// whole run measures the disk the runs actually had. The first probe's
/// own figures are still reported.
pub struct Yardstick {
    dir: std::path::PathBuf,
    burst: ProbeLimits,
    pool: Histogram<u64>,
    bursts_p50_us: Vec<f64>,
}

impl Yardstick {
    /// `burst_samples` per burst (0: no bursts, the first probe alone).
    pub fn new(dir: &Path, burst_samples: usize, pool: Histogram<u64>) -> Self {
        Yardstick {
            dir: dir.to_path_buf(),
            burst: ProbeLimits {
                samples: burst_samples,
                max_time: Duration::from_secs(1),
                seq_bytes: 0,
            },
            pool,
            bursts_p50_us: Vec::new(),
        }
    }

    /// One burst of probe (a), in a fresh subdirectory; a failure is
    /// reported and leaves the pool as it was.
    pub fn burst(&mut self, stop: &AtomicBool) {
        if self.burst.samples == 0 || stop.load(Ordering::Relaxed) {
            return;
        }
        let r = probe_dir(&self.dir)
            .and_then(|tmp| append_fdatasync(tmp.path(), &self.burst, stop, &mut self.pool));
        match r {
            Ok(l) => self.bursts_p50_us.push(l.p50_us),
            Err(e) => eprintln!("disk probe burst failed: {e}"),
        }
    }

    /// Adds the bursts and the pooled latency to `c` (when there were bursts).
    pub fn finish(self, c: &mut DiskCeilings) {
        if !self.bursts_p50_us.is_empty() {
            c.append_fdatasync_pooled = Some(Latency::from_hist(&self.pool));
            c.append_fdatasync_bursts_p50_us = self.bursts_p50_us;
        }
    }
}

impl DiskCeilings {
    /// Probe (a) as the targets use it: pooled when there were bursts.
    pub fn yardstick(&self) -> &Latency {
        self.append_fdatasync_pooled
            .as_ref()
            .unwrap_or(&self.append_fdatasync)
    }
}

/// (b) overwrite + fdatasync of blocks written and synced beforehand.
pub fn overwrite_fdatasync(
    dir: &Path,
    limits: &ProbeLimits,
    stop: &AtomicBool,
) -> std::io::Result<Latency> {
    let path = dir.join("probe-overwrite");
    let mut f = open_new(&path)?;
    let pages = 4096usize; // 16 MiB, written once and synced
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..(pages * PAGE) / chunk.len() {
        f.write_all(&chunk)?;
    }
    f.sync_all()?;
    let buf = pattern(PAGE);
    let r = timed_loop(limits, stop, |i| {
        f.write_all_at(&buf, ((i % pages) * PAGE) as u64)?;
        f.sync_data()
    });
    drop(f);
    let _ = std::fs::remove_file(&path);
    r
}

/// (c) sequential buffered write in 1 MiB chunks, then fsync; MB/s over the whole.
pub fn sequential_write(dir: &Path, bytes: u64, stop: &AtomicBool) -> std::io::Result<(f64, u64)> {
    let path = dir.join("probe-seq");
    let mut f = open_new(&path)?;
    let chunk = pattern(1 << 20);
    let start = Instant::now();
    let mut written = 0u64;
    while written < bytes && !stop.load(Ordering::Relaxed) {
        f.write_all(&chunk)?;
        written += chunk.len() as u64;
    }
    f.sync_all()?;
    let secs = start.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok((written as f64 / secs / 1e6, written))
}

/// (d) write one page into a shared mapping of a fallocated file, msync it.
pub fn msync_page(dir: &Path, limits: &ProbeLimits, stop: &AtomicBool) -> std::io::Result<Latency> {
    let path = dir.join("probe-msync");
    let f = open_new(&path)?;
    let pages = 16384usize; // 64 MiB
    let len = pages * PAGE;
    // SAFETY: plain syscalls on an fd we own; the mapping is unmapped below.
    let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len as libc::off_t) };
    if rc != 0 {
        f.set_len(len as u64)?;
    }
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    let buf = pattern(PAGE);
    let r = timed_loop(limits, stop, |i| {
        let off = (i % pages) * PAGE;
        // SAFETY: `off + PAGE <= len`, inside our mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(buf.as_ptr(), (ptr as *mut u8).add(off), PAGE);
            if libc::msync(
                (ptr as *mut u8).add(off) as *mut libc::c_void,
                PAGE,
                libc::MS_SYNC,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    });
    // SAFETY: unmapping what we mapped.
    unsafe { libc::munmap(ptr, len) };
    drop(f);
    let _ = std::fs::remove_file(&path);
    r
}

/// A fresh subdirectory of `dir` for probe files, removed when dropped.
fn probe_dir(dir: &Path) -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("rmq-bench-disk-")
        .tempdir_in(dir)
}

/// Runs all probes in a fresh subdirectory of `dir`; probe (a)'s samples
/// also go into `pool`.
pub fn probe(
    dir: &Path,
    limits: &ProbeLimits,
    stop: &AtomicBool,
    pool: &mut Histogram<u64>,
) -> std::io::Result<DiskCeilings> {
    let tmp = probe_dir(dir)?;
    let d = tmp.path();
    let append = append_fdatasync(d, limits, stop, pool)?;
    let overwrite = overwrite_fdatasync(d, limits, stop)?;
    let msync = msync_page(d, limits, stop)?;
    let (mb_s, bytes) = sequential_write(d, limits.seq_bytes, stop)?;
    Ok(DiskCeilings {
        append_fdatasync: append,
        append_fdatasync_bursts_p50_us: Vec::new(),
        append_fdatasync_pooled: None,
        overwrite_fdatasync: overwrite,
        seq_write_mb_s: mb_s,
        seq_write_bytes: bytes,
        msync_page: msync,
    })
}

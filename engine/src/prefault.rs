//! Keeps the pages just ahead of the commit log's write position populated.
//!
//! The first write into a fresh page of a mapped file costs a page fault and
//! the kernel zeroing the page, 2.5–5 µs per 4 KiB here: more than the rest
//! of an append. Warming a whole 1 GiB file writable up front costs a CPU for
//! a second per file and dirties it all (the kernel later writes those zeros
//! out); instead, each time the writer crosses a 4 MiB boundary it asks this
//! thread (one channel send) to populate the next 32 MiB with
//! `MADV_POPULATE_WRITE`, so the faults happen here, not on the writer. Used
//! whenever appends go through the mapping into files not warmed writable:
//! `warmMapedFileEnable=false`, and ASYNC_FLUSH, whose files are warmed by
//! reading (see [`crate::mapped_file::WarmPages::Read`]).

use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;

use crate::error::{Result, StoreError};
use crate::mapped_file::MappedFile;

/// The writer asks for a new window every this many bytes.
pub const CHUNK: u64 = 4 << 20;
/// How far ahead of the write position pages are populated.
pub const WINDOW: u64 = 32 << 20;

/// A file and the write position in it.
type Request = (Arc<MappedFile>, u64);

/// The prefault thread.
pub struct Prefaulter {
    tx: Mutex<Option<Sender<Request>>>,
    handle: Mutex<Option<JoinHandle<()>>>,
}

impl Prefaulter {
    pub fn start() -> Result<Self> {
        let (tx, rx) = channel::<Request>();
        let handle = std::thread::Builder::new()
            .name("commitlog-prefault".into())
            .spawn(move || {
                crate::background::lower_this_thread(crate::background::Priority::Behind);
                let mut done_to: Option<(u64, u64)> = None; // (file start, populated end)
                while let Ok(mut req) = rx.recv() {
                    // Only the newest request per file matters.
                    while let Ok(next) = rx.try_recv() {
                        if next.0.start_offset() != req.0.start_offset() {
                            populate(&req.0, req.1, &mut done_to);
                        }
                        req = next;
                    }
                    populate(&req.0, req.1, &mut done_to);
                }
            })
            .map_err(|e| StoreError::io("commitlog-prefault thread", e))?;
        Ok(Prefaulter {
            tx: Mutex::new(Some(tx)),
            handle: Mutex::new(Some(handle)),
        })
    }

    /// Asks for the window after `pos` (relative to `file`) to be populated.
    pub fn ahead_of(&self, file: &Arc<MappedFile>, pos: u64) {
        if let Some(tx) = self.tx.lock().as_ref() {
            let _ = tx.send((file.clone(), pos));
        }
    }

    pub fn shutdown(&self) {
        self.tx.lock().take();
        if let Some(h) = self.handle.lock().take() {
            let _ = h.join();
        }
    }
}

impl Drop for Prefaulter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn populate(file: &MappedFile, pos: u64, done_to: &mut Option<(u64, u64)>) {
    let mut from = pos;
    if let Some((start, end)) = *done_to {
        if start == file.start_offset() {
            from = from.max(end);
        }
    }
    let to = (pos + WINDOW).min(file.size());
    if from < to {
        file.populate(from, to);
        *done_to = Some((file.start_offset(), to));
    }
}

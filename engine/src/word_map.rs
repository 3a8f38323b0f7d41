//! A fixed-size memory-mapped file read and written only in aligned 32-bit
//! atomic words. The consume queue and the index file use it.
//!
//! Why words: in both formats one dispatcher thread writes while many reader
//! threads read the same mapping. Readers normally look only at bytes the
//! writer has published (a write position, or a hash slot, stored with
//! `Release` after the bytes it covers), so the ranges are disjoint. But
//! recovery-time truncation and index slot updates *do* rewrite bytes a slow
//! reader may still be looking at. Plain loads racing plain stores would be
//! undefined behaviour in Rust's memory model; relaxed atomic loads racing
//! relaxed atomic stores are not — at worst a reader sees an old or a new value
//! of each word. Every field of both formats (consume-queue entries at 20·n,
//! index header/slots/entries at 40 + 4·s + 20·n) starts on a 4-byte boundary
//! of a page-aligned mapping, so big-endian 8-byte fields are read as two
//! words. Callers that need a field to be untorn publish it through their own
//! in-memory atomics (or only read it after an `Acquire` that orders it).
//!
//! The cost on x86-64 and aarch64 is nil: an aligned relaxed 32-bit atomic load
//! or store is an ordinary `mov`/`ldr`/`str`.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use crate::error::{Result, StoreError};
use crate::mapped_file::{allocate_blocks, temp_path};

/// A mapped file of fixed length, accessed in aligned 32-bit atomic words.
pub(crate) struct WordMap {
    path: PathBuf,
    // Kept open for the lifetime of the mapping: fd-based allocation
    // (`fallocate`) ahead of writes goes through it.
    file: File,
    map: MmapRaw,
    len: usize,
}

impl WordMap {
    /// Creates `path` (which must not exist) with `len` bytes of zeros and maps it.
    ///
    /// The file is sized under a temporary name (`path` + [`ALLOC_SUFFIX`](crate::mapped_file::ALLOC_SUFFIX))
    /// and renamed into place, as commit log files are
    /// ([`MappedFile::create`](crate::mapped_file::MappedFile::create)): a
    /// crash between creating and sizing it must not leave a short file
    /// under the real name, which [`WordMap::open`] refuses and with it the
    /// whole store. A temporary file left by a crash is reused by the next
    /// creation of the same name; directory listings skip it (its name is
    /// not an offset or a timestamp). Like commit log files, nothing is
    /// fsynced: a killed process leaves the page cache intact, and a
    /// journaling file system logs the size change before the rename.
    /// `allocated` bytes from the start get their blocks now (see
    /// [`WordMap::allocate`]); the rest of `len` is a hole until then.
    pub(crate) fn create(path: &Path, len: u64, allocated: u64) -> Result<Self> {
        check_len(path, len)?;
        // The rename would replace an existing file. Callers create files
        // under their queue's or index's writer lock, and the store's lock
        // file keeps other processes out, so nothing appears between this
        // check and the rename.
        match std::fs::symlink_metadata(path) {
            Ok(_) => {
                return Err(StoreError::io(
                    path,
                    std::io::Error::from(std::io::ErrorKind::AlreadyExists),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(path, e)),
        }
        let tmp = temp_path(path);
        let sized = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .and_then(|file| file.set_len(len).map(|()| file))
            .and_then(|file| allocate_blocks(&file, 0, allocated.min(len)).map(|()| file));
        let file = match sized {
            Ok(file) => file,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(StoreError::io(&tmp, e));
            }
        };
        if let Err(e) = std::fs::rename(&tmp, path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(StoreError::io(path, e));
        }
        // A queue or index file the checkpoint counts as written must not
        // lose its name in a power loss (recovery would not refill it).
        crate::dir::sync_dir(path.parent())?;
        Self::map(path, file, len)
    }

    /// Gives `[from, to)` its blocks before it is written (see
    /// [`allocate_blocks`]).
    pub(crate) fn allocate(&self, from: u64, to: u64) -> Result<()> {
        allocate_blocks(&self.file, from, to.min(self.len as u64))
            .map_err(|e| StoreError::io(self.path(), e))
    }

    /// Opens and maps an existing file, which must be exactly `len` bytes long.
    /// (A file written by Apache RocketMQ may be sparse: a write into a hole
    /// then needs a free block, as in Java.)
    pub(crate) fn open(path: &Path, len: u64) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| StoreError::io(path, e))?;
        let actual = file.metadata().map_err(|e| StoreError::io(path, e))?.len();
        if actual != len {
            return Err(StoreError::corruption(
                path,
                format!("file is {actual} bytes, the configured size is {len}"),
            ));
        }
        Self::map(path, file, len)
    }

    fn map(path: &Path, file: File, len: u64) -> Result<Self> {
        check_len(path, len)?;
        let map = MmapOptions::new()
            .len(len as usize)
            .map_raw(&file)
            .map_err(|e| StoreError::io(path, e))?;
        Ok(WordMap {
            path: path.to_path_buf(),
            file,
            map,
            len: len as usize,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    #[inline]
    fn word(&self, pos: usize) -> &AtomicU32 {
        assert!(
            pos.is_multiple_of(4) && pos + 4 <= self.len,
            "word position {pos} outside mapping of {} bytes",
            self.len
        );
        // SAFETY: the mapping is page-aligned and `pos` is a multiple of 4 inside
        // it (checked above), so the pointer is valid and aligned for AtomicU32
        // for as long as `self` (which owns the mapping) lives. Every access to
        // the mapping made by this process goes through atomics (module docs),
        // so there are no non-atomic accesses racing with these.
        unsafe { AtomicU32::from_ptr(self.map.as_mut_ptr().add(pos).cast::<u32>()) }
    }

    /// Big-endian u32 at `pos` (relaxed).
    #[inline]
    pub(crate) fn get_u32(&self, pos: usize) -> u32 {
        u32::from_be(self.word(pos).load(Ordering::Relaxed))
    }

    /// Big-endian u32 at `pos`, ordered after everything published before the
    /// matching [`put_u32_release`](Self::put_u32_release).
    #[inline]
    pub(crate) fn get_u32_acquire(&self, pos: usize) -> u32 {
        u32::from_be(self.word(pos).load(Ordering::Acquire))
    }

    #[inline]
    pub(crate) fn put_u32(&self, pos: usize, v: u32) {
        self.word(pos).store(v.to_be(), Ordering::Relaxed)
    }

    /// Stores `v`, making every earlier store of this thread visible to a
    /// reader that observes it with [`get_u32_acquire`](Self::get_u32_acquire).
    #[inline]
    pub(crate) fn put_u32_release(&self, pos: usize, v: u32) {
        self.word(pos).store(v.to_be(), Ordering::Release)
    }

    #[inline]
    pub(crate) fn get_i32(&self, pos: usize) -> i32 {
        self.get_u32(pos) as i32
    }

    #[inline]
    pub(crate) fn put_i32(&self, pos: usize, v: i32) {
        self.put_u32(pos, v as u32)
    }

    /// Big-endian i64 at `pos` as two words (may be torn if racing a store).
    #[inline]
    pub(crate) fn get_i64(&self, pos: usize) -> i64 {
        let hi = self.get_u32(pos) as u64;
        let lo = self.get_u32(pos + 4) as u64;
        ((hi << 32) | lo) as i64
    }

    #[inline]
    pub(crate) fn put_i64(&self, pos: usize, v: i64) {
        let v = v as u64;
        self.put_u32(pos, (v >> 32) as u32);
        self.put_u32(pos + 4, v as u32);
    }

    /// Copies `out.len()` bytes starting at `pos` (both multiples of 4).
    pub(crate) fn read_into(&self, pos: usize, out: &mut [u8]) {
        assert!(
            out.len().is_multiple_of(4),
            "read length must be a multiple of 4"
        );
        for (i, chunk) in out.chunks_exact_mut(4).enumerate() {
            chunk.copy_from_slice(&self.get_u32(pos + 4 * i).to_be_bytes());
        }
    }

    /// `msync(MS_SYNC)` of `[pos, pos + len)` (rounded out to whole pages).
    pub(crate) fn flush_range(&self, pos: usize, len: usize) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let len = len.min(self.len.saturating_sub(pos));
        self.map
            .flush_range(pos, len)
            .map_err(|e| StoreError::io(&self.path, e))
    }

    /// `msync(MS_SYNC)` of the whole mapping.
    pub(crate) fn flush(&self) -> Result<()> {
        self.map.flush().map_err(|e| StoreError::io(&self.path, e))
    }
}

/// Refuses a length the word accessors cannot map.
fn check_len(path: &Path, len: u64) -> Result<()> {
    if len == 0 || !len.is_multiple_of(4) || usize::try_from(len).is_err() {
        return Err(StoreError::InvalidArgument(format!(
            "mapped file length {len} of {} must be a positive multiple of 4",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_big_endian_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let m = WordMap::create(&p, 4096, 4096).unwrap();
        m.put_i64(4, 0x0102_0304_0506_0708);
        m.put_i32(12, -2);
        m.flush().unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(
            &bytes[4..16],
            &[1, 2, 3, 4, 5, 6, 7, 8, 0xFF, 0xFF, 0xFF, 0xFE]
        );
        assert_eq!(m.get_i64(4), 0x0102_0304_0506_0708);
        assert_eq!(m.get_i32(12), -2);
        let mut buf = [0u8; 8];
        m.read_into(4, &mut buf);
        assert_eq!(buf, [1, 2, 3, 4, 5, 6, 7, 8]);
        drop(m);
        assert!(WordMap::open(&p, 8192).is_err());
        assert!(
            WordMap::create(&p, 4096, 4096).is_err(),
            "create must not clobber"
        );
    }

    /// No holes: a store through the mapping must never need a block the
    /// disk no longer has (SIGBUS).
    #[test]
    fn created_files_have_their_blocks_allocated() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path().join("00000000000000000000");
        let _m = WordMap::create(&p, 1 << 20, 1 << 20).expect("create");
        let meta = std::fs::metadata(&p).expect("created");
        assert!(meta.blocks() * 512 >= 1 << 20, "{} blocks", meta.blocks());
    }

    /// A crash between creating and sizing leaves only the temporary file:
    /// the next creation of that name reuses it, and the created file has
    /// its full size with no temporary file left beside it.
    #[test]
    fn create_sizes_under_a_temporary_name_and_reuses_a_leftover() {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path().join("00000000000000000000");
        let tmp = temp_path(&p);
        std::fs::write(&tmp, b"").expect("leftover");
        let m = WordMap::create(&p, 6000, 6000).expect("create over a leftover");
        assert_eq!(std::fs::metadata(&p).expect("created").len(), 6000);
        assert!(!tmp.exists(), "temporary file renamed into place");
        drop(m);
        let fresh = dir.path().join("00000000000000006000");
        WordMap::create(&fresh, 6000, 6000).expect("create");
        assert_eq!(std::fs::metadata(&fresh).expect("created").len(), 6000);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        // A bad length is refused before anything is created.
        let bad = dir.path().join("bad");
        assert!(WordMap::create(&bad, 6, 6).is_err());
        assert!(!bad.exists() && !temp_path(&bad).exists());
    }
}

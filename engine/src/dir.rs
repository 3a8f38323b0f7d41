//! Directory entries that survive a power loss. A new file's data can be
//! durable (fdatasync) while its name is not: the entry lives in the
//! directory, which needs an fsync of its own. Without one, a file created
//! or renamed into place just before a power loss can come back under its
//! temporary name (which the next open deletes) or not at all, taking
//! acknowledged records with it.

use std::fs::File;
use std::io::ErrorKind;
use std::path::Path;

use crate::error::{Result, StoreError};

/// fsyncs a directory so a created, renamed or removed entry survives a crash.
pub fn sync_dir(dir: Option<&Path>) -> Result<()> {
    if let Some(d) = dir {
        File::open(d)
            .and_then(|f| f.sync_all())
            .map_err(|e| StoreError::io(d, e))?;
    }
    Ok(())
}

/// Creates `dir` and its missing parents, fsyncing each directory that
/// gained an entry. Does nothing (no fsync) when `dir` exists.
pub fn create_dir_durable(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(p) = parent {
        create_dir_durable(p)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => sync_dir(parent),
        // Created meanwhile by another thread, which syncs its parent.
        Err(e) if e.kind() == ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(StoreError::io(dir, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_nested_directories_once() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("a").join("b").join("c");
        create_dir_durable(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_durable(&deep).unwrap();
        // A file in the way is an error naming it, not a panic.
        let file = root.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let err = create_dir_durable(&file.join("d")).unwrap_err();
        assert!(err.to_string().contains("f"), "{err}");
    }
}

//! RocketMQ's config files (`MixAll.string2File` / `ConfigManager`): the
//! broker's `config/*.json`, the name server's `kvConfig.json`.
//!
//! [`persist`] writes `<name>`: the new text goes to `<name>.tmp` (fsynced),
//! the current file is copied to `<name>.bak`, then `<name>.tmp` is renamed
//! over `<name>` and the directory fsynced. A crash leaves either the old or
//! the new file in place, plus a backup. [`load`] reads `<name>`, or
//! `<name>.bak` when the first is missing or unparsable. [`replace`] is
//! [`persist`] without the backup, for a repair tool whose current file may
//! be the damaged one and whose `.bak` may be the good one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Loads `path`, falling back to `path.bak`. `None` when neither holds JSON.
pub fn load(path: &Path) -> Option<Value> {
    read_first_parsable(path).0
}

/// A config file that exists but neither it nor its backup holds JSON.
#[derive(Debug, thiserror::Error)]
#[error("{} holds no readable JSON, nor does its backup ({why}); fix or remove it (removing it forgets what it recorded)", path.display())]
pub struct UnreadableConfig {
    pub path: PathBuf,
    pub why: String,
}

/// [`load`] for files whose loss would lose data (consumer offsets):
/// `Ok(None)` when neither `path` nor `path.bak` has content, an error when
/// one has content but neither parses. RocketMQ's broker likewise refuses
/// to start when a config file and its backup are both unreadable.
pub fn load_or_refuse(path: &Path) -> Result<Option<Value>, UnreadableConfig> {
    match read_first_parsable(path) {
        (Some(v), _) => Ok(Some(v)),
        (None, why) if why.is_empty() => Ok(None),
        (None, why) => Err(UnreadableConfig {
            path: path.to_path_buf(),
            why: why.join("; "),
        }),
    }
}

/// One pass over `path` and `path.bak` (missing or blank files skipped):
/// the first that parses, and what was wrong with each one before it.
fn read_first_parsable(path: &Path) -> (Option<Value>, Vec<String>) {
    let mut why = Vec::new();
    for candidate in [path.to_path_buf(), with_suffix(path, ".bak")] {
        match fs::read(&candidate) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => {}
            Ok(bytes) => match crate::parse(&bytes) {
                Ok(v) => {
                    tracing::info!(path = %candidate.display(), "loaded config file");
                    return (Some(v), why);
                }
                Err(e) => {
                    tracing::warn!(path = %candidate.display(), "config file is not valid JSON ({e}), ignored");
                    why.push(format!("{}: not JSON", candidate.display()));
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %candidate.display(), "cannot read config file: {e}");
                why.push(format!("{}: {e}", candidate.display()));
            }
        }
    }
    (None, why)
}

/// Atomically replaces `path` with `text` (tmp + fsync, copy to .bak, rename).
/// Durable when it returns `Ok`.
pub fn persist(path: &Path, text: &str) -> io::Result<()> {
    write_via_temp(path, text, true)
}

/// Atomically replaces `path` with `text` (tmp + fsync, rename), leaving any
/// `.bak` as it is. Durable when it returns `Ok`.
pub fn replace(path: &Path, text: &str) -> io::Result<()> {
    write_via_temp(path, text, false)
}

fn write_via_temp(path: &Path, text: &str, backup: bool) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = with_suffix(path, ".tmp");
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    if backup && path.exists() {
        let bak = with_suffix(path, ".bak");
        fs::copy(path, &bak)?;
        File::open(&bak)?.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    // The rename is durable once the directory is.
    if let Some(dir) = path.parent() {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persist_keeps_a_backup_and_load_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config").join("x.json");
        persist(&path, "{\"a\":1}").unwrap();
        persist(&path, "{\"a\":2}").unwrap();
        assert_eq!(
            fs::read_to_string(with_suffix(&path, ".bak")).unwrap(),
            "{\"a\":1}"
        );
        assert!(!with_suffix(&path, ".tmp").exists());
        assert_eq!(load(&path).unwrap()["a"], 2);
        fs::write(&path, "garbage{").unwrap();
        assert_eq!(load(&path).unwrap()["a"], 1);
        replace(&path, "{\"a\":3}").unwrap();
        assert_eq!(load(&path).unwrap()["a"], 3);
        assert_eq!(
            fs::read_to_string(with_suffix(&path, ".bak")).unwrap(),
            "{\"a\":1}",
            "replace leaves the backup alone"
        );
    }
}

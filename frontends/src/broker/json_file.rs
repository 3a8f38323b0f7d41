//! RocketMQ's config-file persistence (`MixAll.string2File` / `ConfigManager`)
//! and fastjson's JSON dialect.
//!
//! Writing `<name>`: the new text goes to `<name>.tmp` (fsynced), the
//! current file is copied to `<name>.bak`, then `<name>.tmp` is renamed over
//! `<name>` and the directory fsynced. A crash leaves either the old or the
//! new file in place, plus a backup. Loading reads `<name>`, or `<name>.bak`
//! when the first is missing or unparsable.
//!
//! fastjson writes integer map keys unquoted (`{0:12}`) — offset tables look
//! like that on disk — so the reader accepts unquoted keys and the writer
//! produces them for the maps the caller marks as integer-keyed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Parses JSON as fastjson accepts it (unquoted keys allowed).
pub fn parse(text: &[u8]) -> Option<Value> {
    crate::namesrv::wire::parse_lenient(text).ok()
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Loads `path`, falling back to `path.bak`. `None` when neither holds JSON.
pub fn load(path: &Path) -> Option<Value> {
    for candidate in [path.to_path_buf(), with_suffix(path, ".bak")] {
        match fs::read(&candidate) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => continue,
            Ok(bytes) => match parse(&bytes) {
                Some(v) => {
                    tracing::info!(path = %candidate.display(), "loaded config file");
                    return Some(v);
                }
                None => {
                    tracing::warn!(path = %candidate.display(), "config file is not valid JSON, ignored")
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %candidate.display(), "cannot read config file: {e}"),
        }
    }
    None
}

/// Atomically replaces `path` with `text` (tmp + fsync, copy to .bak, rename).
pub fn persist(path: &Path, text: &str) -> io::Result<()> {
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
    if path.exists() {
        let bak = with_suffix(path, ".bak");
        fs::copy(path, &bak)?;
        File::open(&bak)?.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Renders `v` like fastjson's PrettyFormat (tab indentation, keys sorted).
/// `int_keys(path)` says whether the object at `path` (the keys leading to
/// it from the root) has integer keys to be written unquoted.
pub fn to_pretty(v: &Value, int_keys: &dyn Fn(&[&str]) -> bool) -> String {
    let mut out = String::new();
    let mut path = Vec::new();
    write_value(v, 0, &mut path, int_keys, true, &mut out);
    out
}

/// Compact rendering (what goes on the wire), same key rules.
pub fn to_compact(v: &Value, int_keys: &dyn Fn(&[&str]) -> bool) -> String {
    let mut out = String::new();
    let mut path = Vec::new();
    write_value(v, 0, &mut path, int_keys, false, &mut out);
    out
}

fn indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push('\t');
    }
}

fn write_value<'a>(
    v: &'a Value,
    depth: usize,
    path: &mut Vec<&'a str>,
    int_keys: &dyn Fn(&[&str]) -> bool,
    pretty: bool,
    out: &mut String,
) {
    match v {
        Value::Object(map) => {
            if map.is_empty() {
                out.push_str("{}");
                return;
            }
            let unquoted = int_keys(path);
            out.push('{');
            // Integer keys sort numerically, as a Java map of Integer would.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            if unquoted {
                entries.sort_by_key(|(k, _)| k.parse::<i64>().unwrap_or(i64::MAX));
            }
            for (i, (k, val)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if pretty {
                    out.push('\n');
                    indent(out, depth + 1);
                }
                if unquoted && k.parse::<i64>().is_ok() {
                    out.push_str(k);
                } else {
                    out.push_str(&Value::String(k.clone()).to_string());
                }
                out.push(':');
                path.push(k);
                write_value(val, depth + 1, path, int_keys, pretty, out);
                path.pop();
            }
            if pretty {
                out.push('\n');
                indent(out, depth);
            }
            out.push('}');
        }
        Value::Array(items) => {
            if items.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if pretty {
                    out.push('\n');
                    indent(out, depth + 1);
                }
                write_value(item, depth + 1, path, int_keys, pretty, out);
            }
            if pretty {
                out.push('\n');
                indent(out, depth);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Reads an integer from a JSON number or numeric string.
pub fn as_i64(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Reads a boolean from a JSON bool or string (`"true"`, `"1"`).
pub fn as_bool(v: Option<&Value>) -> Option<bool> {
    match v? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => Some(s.eq_ignore_ascii_case("true") || s == "1"),
        Value::Number(n) => Some(n.as_i64() == Some(1)),
        _ => None,
    }
}

/// Reads a string (numbers rendered as text).
pub fn as_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unquoted_integer_keys_round_trip() {
        let text = r#"{"offsetTable":{"T@G":{0:250,1:248,10:3}}}"#;
        let v = parse(text.as_bytes()).unwrap();
        let only_inner = |p: &[&str]| p.len() == 2 && p[0] == "offsetTable";
        assert_eq!(
            to_compact(&v, &only_inner),
            r#"{"offsetTable":{"T@G":{0:250,1:248,10:3}}}"#
        );
        let pretty = to_pretty(&v, &only_inner);
        assert!(pretty.contains("\t\t\"T@G\":{\n\t\t\t0:250,"), "{pretty}");
        assert_eq!(parse(pretty.as_bytes()).unwrap(), v);
    }

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
    }
}

//! The small files: `checkpoint`, `abort` and `config/*.json`.

use std::path::{Path, PathBuf};

use engine::checkpoint::{Checkpoint, CHECKPOINT_SIZE};
use serde_json::Value;

use crate::report::{Kind, Problem};

/// The config files RocketMQ keeps in `config/`.
pub const CONFIG_FILES: &[&str] = &[
    "topics.json",
    "consumerOffset.json",
    "delayOffset.json",
    "subscriptionGroup.json",
    "consumerFilter.json",
    "lmqConsumerOffset.json",
];

/// The checkpoint as found.
#[derive(Debug, Clone)]
pub enum CheckpointState {
    Missing,
    Bad(String),
    Ok(Checkpoint),
}

pub fn read_checkpoint(path: &Path) -> CheckpointState {
    match std::fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => CheckpointState::Missing,
        Err(e) => CheckpointState::Bad(e.to_string()),
        Ok(b) if b.len() != CHECKPOINT_SIZE => {
            CheckpointState::Bad(format!("{} bytes, expected {CHECKPOINT_SIZE}", b.len()))
        }
        Ok(b) => match Checkpoint::decode(&b) {
            Some(c) => CheckpointState::Ok(c),
            None => CheckpointState::Bad("unreadable".into()),
        },
    }
}

/// Problems of the checkpoint given the commit log's end and last store time.
pub fn check_checkpoint(
    path: &Path,
    state: &CheckpointState,
    records: u64,
    end: u64,
    last_ts: i64,
) -> Vec<Problem> {
    let mut out = Vec::new();
    match state {
        CheckpointState::Missing => {
            if records > 0 {
                out.push(Problem::new(
                    Kind::CheckpointMissing,
                    path,
                    None,
                    "no checkpoint, but the commit log holds records",
                ));
            }
        }
        CheckpointState::Bad(why) => {
            out.push(Problem::new(Kind::CheckpointBad, path, None, why.clone()))
        }
        CheckpointState::Ok(c) => {
            if let Some(d) = c.dispatched_offset {
                if d > end {
                    out.push(Problem::new(
                        Kind::CheckpointStale,
                        path,
                        Some(32),
                        format!("dispatched offset {d} is past the commit log end {end}"),
                    ));
                } else if d < end {
                    out.push(Problem::new(
                        Kind::BeyondCheckpoint,
                        path,
                        Some(32),
                        format!(
                            "{} bytes of records in [{d}, {end}) lie beyond the checkpoint's dispatched offset",
                            end - d
                        ),
                    ));
                }
            }
            if records > 0 && (c.physic_msg_timestamp > last_ts || c.logics_msg_timestamp > last_ts)
            {
                out.push(Problem::new(
                    Kind::CheckpointStale,
                    path,
                    Some(0),
                    format!(
                        "timestamps {} / {} are newer than the last record's store time {last_ts}",
                        c.physic_msg_timestamp, c.logics_msg_timestamp
                    ),
                ));
            }
        }
    }
    out
}

/// A config file as found: parsed, or why not.
pub struct ConfigFile {
    pub path: PathBuf,
    pub parsed: Result<Value, String>,
    /// Whether `<name>.bak` exists and parses.
    pub bak: Option<Value>,
}

/// Reads the config files in `dir`: those that exist and can be read, plus
/// a problem for each that exists but cannot (a missing file is no problem:
/// the broker starts without it; an unreadable one it would fail on).
pub fn read_configs(dir: &Path) -> (Vec<ConfigFile>, Vec<Problem>) {
    let mut out = Vec::new();
    let mut unreadable = Vec::new();
    let cannot_read = |path: &Path, e: std::io::Error| {
        Problem::new(
            Kind::ConfigUnreadable,
            path,
            None,
            format!("cannot be read: {e}"),
        )
    };
    let mut names: Vec<String> = CONFIG_FILES.iter().map(|s| s.to_string()).collect();
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            for e in rd {
                match e {
                    Ok(e) => {
                        let n = e.file_name().to_string_lossy().into_owned();
                        if n.ends_with(".json") && !names.contains(&n) {
                            names.push(n);
                        }
                    }
                    Err(e) => unreadable.push(cannot_read(dir, e)),
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => unreadable.push(cannot_read(dir, e)),
    }
    for name in names {
        let path = dir.join(&name);
        // Lossy: a stray non-UTF-8 byte is a parse problem, not a read one.
        let text = match std::fs::read(&path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                unreadable.push(cannot_read(&path, e));
                continue;
            }
        };
        let parsed = if text.trim().is_empty() {
            Err("empty file".to_string())
        } else {
            fastjson::parse(text.as_bytes()).map_err(|e| e.to_string())
        };
        let bak = std::fs::read_to_string(dir.join(format!("{name}.bak")))
            .ok()
            .and_then(|t| fastjson::parse(t.as_bytes()).ok());
        out.push(ConfigFile { path, parsed, bak });
    }
    (out, unreadable)
}

/// Topics that live without a topics.json entry.
fn system_topic(t: &str) -> bool {
    t == engine::schedule::SCHEDULE_TOPIC
        || t.starts_with("RMQ_SYS_")
        || t.starts_with("%RETRY%")
        || t.starts_with("%DLQ%")
        || t == crate::commitlog::QUARANTINE_TOPIC
}

/// Topics that have consume queues but no entry in topics.json's
/// `topicConfigTable`, each with the highest queue id found for it, by name.
pub fn topics_missing_from(
    table: &serde_json::Map<String, Value>,
    queue_max: &std::collections::HashMap<(String, i32), u64>,
) -> Vec<(String, i32)> {
    let mut highest: std::collections::BTreeMap<&str, i32> = std::collections::BTreeMap::new();
    for (topic, queue_id) in queue_max.keys() {
        if system_topic(topic) || table.contains_key(topic) {
            continue;
        }
        let h = highest.entry(topic).or_insert(*queue_id);
        *h = (*h).max(*queue_id);
    }
    highest
        .into_iter()
        .map(|(t, q)| (t.to_string(), q))
        .collect()
}

/// What [`add_missing_topics`] changed in a topics.json value.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TopicsAdded {
    /// The file had no `topicConfigTable`; an empty one was added first.
    pub table_created: bool,
    /// (topic, queue count) of each entry added.
    pub topics: Vec<(String, i32)>,
}

impl TopicsAdded {
    pub fn changed(&self) -> bool {
        self.table_created || !self.topics.is_empty()
    }
}

/// Gives every topic with consume queues but no `topicConfigTable` entry
/// one with Java's TopicConfig defaults (perm 6, SINGLE_TAG, sys flag 0, not
/// ordered) and as many read and write queues as its highest queue id + 1.
/// When anything changed, bumps `dataVersion` as `DataVersion.nextVersion()`
/// does (counter + 1, timestamp `now_ms`) if the file has one, so brokers and
/// name servers see the table changed. A table that is there but not an
/// object is left alone (nothing is changed).
pub fn add_missing_topics(
    v: &mut Value,
    queue_max: &std::collections::HashMap<(String, i32), u64>,
    now_ms: i64,
) -> TopicsAdded {
    let mut added = TopicsAdded::default();
    let Some(root) = v.as_object_mut() else {
        return added;
    };
    if !root.contains_key("topicConfigTable") {
        root.insert(
            "topicConfigTable".into(),
            Value::Object(serde_json::Map::new()),
        );
        added.table_created = true;
    }
    let Some(table) = root
        .get_mut("topicConfigTable")
        .and_then(Value::as_object_mut)
    else {
        return added;
    };
    for (topic, highest) in topics_missing_from(table, queue_max) {
        let queues = highest.saturating_add(1).max(1);
        table.insert(
            topic.clone(),
            serde_json::json!({
                "order": false,
                "perm": 6,
                "readQueueNums": queues,
                "topicFilterType": "SINGLE_TAG",
                "topicName": topic,
                "topicSysFlag": 0,
                "writeQueueNums": queues,
            }),
        );
        added.topics.push((topic, queues));
    }
    if added.changed() {
        if let Some(dv) = root.get_mut("dataVersion").and_then(Value::as_object_mut) {
            let counter = fastjson::as_i64(dv.get("counter")).unwrap_or(0);
            dv.insert("counter".into(), Value::from(counter.saturating_add(1)));
            dv.insert("timestamp".into(), Value::from(now_ms));
        }
    }
    added
}

/// Problems of the config files, given each queue's max offset.
pub fn check_configs(
    files: &[ConfigFile],
    queue_max: &std::collections::HashMap<(String, i32), u64>,
) -> Vec<Problem> {
    let mut out = Vec::new();
    for f in files {
        let name = f.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let v = match &f.parsed {
            Err(why) => {
                out.push(Problem::new(
                    Kind::ConfigUnparseable,
                    &f.path,
                    None,
                    format!(
                        "{why}{}",
                        if f.bak.is_some() {
                            " (a parseable .bak exists)"
                        } else {
                            ""
                        }
                    ),
                ));
                continue;
            }
            Ok(v) => v,
        };
        match name {
            "topics.json" => {
                let Some(table) = v.get("topicConfigTable").and_then(Value::as_object) else {
                    out.push(Problem::new(
                        Kind::ConfigInconsistent,
                        &f.path,
                        None,
                        "no topicConfigTable object",
                    ));
                    continue;
                };
                for (t, _) in topics_missing_from(table, queue_max) {
                    out.push(Problem::new(
                        Kind::ConfigInconsistent,
                        &f.path,
                        None,
                        format!("topic {t:?} has consume queues but no entry in topicConfigTable"),
                    ));
                }
            }
            "consumerOffset.json" | "delayOffset.json" => {
                let Some(table) = v.get("offsetTable").and_then(Value::as_object) else {
                    out.push(Problem::new(
                        Kind::ConfigInconsistent,
                        &f.path,
                        None,
                        "no offsetTable object",
                    ));
                    continue;
                };
                for (key, off) in offsets_beyond(name, table, queue_max) {
                    out.push(Problem::new(
                        Kind::ConfigInconsistent,
                        &f.path,
                        None,
                        format!("offset {off} of {key} is past its queue's max offset"),
                    ));
                }
            }
            _ => {}
        }
    }
    out
}

/// (description, offset) of every stored offset past its queue's max offset;
/// with `clamp` also lowers them in `table`.
fn offsets_beyond(
    name: &str,
    table: &serde_json::Map<String, Value>,
    queue_max: &std::collections::HashMap<(String, i32), u64>,
) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for (key, val) in table {
        if name == "delayOffset.json" {
            let (Ok(level), Some(off)) = (key.parse::<i32>(), val.as_u64()) else {
                continue;
            };
            let q = (engine::schedule::SCHEDULE_TOPIC.to_string(), level - 1);
            if let Some(max) = queue_max.get(&q) {
                if off > *max {
                    out.push((format!("delay level {level}"), off));
                }
            }
        } else {
            let Some((topic, _group)) = key.rsplit_once('@') else {
                continue;
            };
            let Some(m) = val.as_object() else { continue };
            for (qid, off) in m {
                let (Ok(qid), Some(off)) = (qid.parse::<i32>(), off.as_u64()) else {
                    continue;
                };
                if let Some(max) = queue_max.get(&(topic.to_string(), qid)) {
                    if off > *max {
                        out.push((format!("{key} queue {qid}"), off));
                    }
                }
            }
        }
    }
    out
}

/// Lowers every stored offset past its queue's max offset; returns how many.
pub fn clamp_offsets(
    name: &str,
    v: &mut Value,
    queue_max: &std::collections::HashMap<(String, i32), u64>,
) -> usize {
    let Some(table) = v.get_mut("offsetTable").and_then(Value::as_object_mut) else {
        return 0;
    };
    let mut n = 0;
    for (key, val) in table.iter_mut() {
        if name == "delayOffset.json" {
            let (Ok(level), Some(off)) = (key.parse::<i32>(), val.as_u64()) else {
                continue;
            };
            let q = (engine::schedule::SCHEDULE_TOPIC.to_string(), level - 1);
            if let Some(max) = queue_max.get(&q).filter(|m| off > **m) {
                *val = Value::from(*max);
                n += 1;
            }
        } else if let (Some((topic, _)), Some(m)) =
            (key.clone().rsplit_once('@'), val.as_object_mut())
        {
            for (qid, off) in m.iter_mut() {
                let (Ok(q), Some(o)) = (qid.parse::<i32>(), off.as_u64()) else {
                    continue;
                };
                if let Some(max) = queue_max.get(&(topic.to_string(), q)).filter(|m| o > **m) {
                    *off = Value::from(*max);
                    n += 1;
                }
            }
        }
    }
    n
}

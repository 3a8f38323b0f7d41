//! `repair`: fixes what `check` finds, printing each change as it goes.
//!
//! * Commit log (see the crate docs for why): a torn tail is zeroed; broken
//!   bytes between whole records become one *quarantine record* of exactly
//!   their length; a damaged file end before later files becomes an
//!   end-of-file blank; a wrong PHYSICALOFFSET field is rewritten; a
//!   QUEUEOFFSET, QUEUEID or topic that disagrees with the consume-queue
//!   entry serving the record is rewritten when check could tell the header
//!   is the damaged side, else left with its queues as they are; a short
//!   file is extended with zeros. No record is dropped or moved, and no
//!   other byte of a whole, valid record is touched.
//! * Derived files: every consume queue with a problem, every stray path in
//!   `consumequeue/` and (on any index problem) every index file is moved
//!   to the backup; the checkpoint's
//!   dispatched offset is set to 0; then the engine itself opens the store
//!   (`MessageStore::open`: recovery + re-dispatch, exactly what the broker
//!   does at start) and shuts it down cleanly, which rebuilds what was
//!   dropped and writes a fresh checkpoint.
//! * Config files: an unparseable one is replaced by its `.bak` when that
//!   parses, else moved aside (the broker then starts without it); consumer
//!   and delay offsets past their queue's end are lowered to it; a topic with
//!   consume queues but no topics.json entry gets one with TopicConfig's
//!   defaults and as many queues as it has (else a broker that does not
//!   auto-create topics has no route to its messages).
//!
//! Every file rewritten or removed is first copied (or moved) to
//! `<store>/fsck-backup-<time>/` unless `--no-backup`; for commit log files
//! only the overwritten byte ranges are saved (`<file>.at-<offset>`).

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use engine::checkpoint::{Checkpoint, StoreLock};
use engine::record::{self, sysflag, Decoded, MessageToStore};
use engine::{MessageStore, StoreError};
use serde_json::Value;

use crate::check::{check, Checked};
use crate::commitlog::{Fix, MIN_RECORD, QUARANTINE_TOPIC};
use crate::error::{AtPath, Error, Result};
use crate::meta::CheckpointState;
use crate::report::{Kind, Problem, Report};
use crate::store::{ensure_store, Settings, BACKUP_PREFIX};

#[derive(Debug, Clone, Copy)]
pub struct RepairOptions {
    /// Only print the plan.
    pub dry_run: bool,
    /// Keep a backup of every rewritten or removed file.
    pub backup: bool,
    pub show_progress: bool,
}

/// What repair did.
#[derive(Debug)]
pub struct RepairOutcome {
    /// The check before repair.
    pub before: Report,
    /// Actions taken (or planned, with `dry_run`).
    pub actions: Vec<String>,
    /// Problems repair could not fix.
    pub unfixable: Vec<Problem>,
    /// The check after repair (`None` for a dry run or when nothing was done).
    pub after: Option<Report>,
    pub backup_dir: Option<PathBuf>,
}

struct Ctx<'a> {
    root: PathBuf,
    opts: RepairOptions,
    backup_dir: PathBuf,
    actions: Vec<String>,
    say: &'a mut dyn FnMut(&str),
}

impl Ctx<'_> {
    fn act(&mut self, what: String) {
        let line = if self.opts.dry_run {
            format!("would {what}")
        } else {
            what
        };
        (self.say)(&line);
        self.actions.push(line);
    }

    fn backup_path(&self, path: &Path) -> PathBuf {
        let rel = path.strip_prefix(&self.root).unwrap_or(path);
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        self.backup_dir.join(rel)
    }

    /// Saves `[pos, pos+len)` of a file before it is overwritten.
    fn backup_range(&self, file: &Path, pos: u64, len: u64) -> Result<()> {
        if !self.opts.backup || len == 0 {
            return Ok(());
        }
        let f = std::fs::File::open(file).at(file)?;
        let mut buf = vec![0u8; len as usize];
        f.read_exact_at(&mut buf, pos).at(file)?;
        let mut dst = self.backup_path(file).into_os_string();
        dst.push(format!(".at-{pos}"));
        let dst = PathBuf::from(dst);
        if let Some(d) = dst.parent() {
            std::fs::create_dir_all(d).at(d)?;
        }
        std::fs::write(&dst, buf).at(&dst)
    }

    /// Copies a file to the backup before it is rewritten.
    fn backup_copy(&self, path: &Path) -> Result<()> {
        if !self.opts.backup || !path.exists() {
            return Ok(());
        }
        let dst = self.backup_path(path);
        if let Some(d) = dst.parent() {
            std::fs::create_dir_all(d).at(d)?;
        }
        std::fs::copy(path, &dst).at(path).map(|_| ())
    }

    /// Moves a file or directory into the backup (or deletes it).
    fn remove(&self, path: &Path) -> Result<()> {
        if self.opts.backup {
            let dst = self.backup_path(path);
            if let Some(d) = dst.parent() {
                std::fs::create_dir_all(d).at(d)?;
            }
            std::fs::rename(path, dst).at(path)
        } else if path.is_dir() {
            std::fs::remove_dir_all(path).at(path)
        } else {
            std::fs::remove_file(path).at(path)
        }
    }
}

fn write_at(path: &Path, pos: u64, bytes: &[u8]) -> Result<()> {
    let f = OpenOptions::new().write(true).open(path).at(path)?;
    f.write_all_at(bytes, pos).at(path)?;
    f.sync_data().at(path)
}

/// The record written in place of `len` damaged bytes at absolute offset
/// `phys`: a ROLLBACK-type record (never given a consume-queue entry or
/// index keys, so no consumer ever sees it) in topic `FSCK_DAMAGED`, with
/// property `FSCK=1`, whose body is the first bytes of the damaged data.
pub fn quarantine_record(damaged: &[u8], phys: u64, store_timestamp: i64) -> Option<Vec<u8>> {
    let len = damaged.len();
    let props = "FSCK\u{1}1";
    let props = if len >= MIN_RECORD + 1 + props.len() {
        props
    } else {
        ""
    };
    let topic_len = QUARANTINE_TOPIC
        .len()
        .min(len.checked_sub(MIN_RECORD + props.len())?);
    if topic_len == 0 {
        return None;
    }
    let body_len = len - MIN_RECORD - topic_len - props.len();
    let mut msg = MessageToStore::new(
        &QUARANTINE_TOPIC[..topic_len],
        0,
        &damaged[..body_len],
        props,
    );
    msg.sys_flag = sysflag::TRANSACTION_ROLLBACK;
    msg.born_timestamp = store_timestamp;
    msg.born_host = "0.0.0.0:0".parse().ok()?;
    msg.store_host = msg.born_host;
    let mut buf = Vec::with_capacity(len);
    msg.encode_into(&mut buf);
    record::patch_under_lock(&mut buf, 0, phys as i64, store_timestamp);
    (buf.len() == len).then_some(buf)
}

/// Store time of the record at `pos` of `path`, if one starts there.
fn store_time_at(path: &Path, pos: u64) -> Option<i64> {
    let f = std::fs::File::open(path).ok()?;
    let mut head = vec![0u8; 64 << 10];
    let n = f.read_at(&mut head, pos).ok()?;
    let total = i32::from_be_bytes(head.get(..4)?.try_into().ok()?);
    if total <= 0 {
        return None;
    }
    let mut rec = vec![0u8; total as usize];
    f.read_exact_at(&mut rec, pos).ok()?;
    let _ = n;
    match record::decode(&rec, false) {
        Decoded::Message(v) => Some(v.store_timestamp),
        _ => None,
    }
}

fn apply_fix(ctx: &mut Ctx<'_>, fix: &Fix, last_ts: i64) -> Result<()> {
    let dry = ctx.opts.dry_run;
    match fix {
        Fix::Zero { file, pos, end } => {
            ctx.act(format!(
                "zero the torn tail [{pos}, {end}) of {}",
                file.display()
            ));
            if !dry {
                ctx.backup_range(file, *pos, end - pos)?;
                let f = OpenOptions::new().write(true).open(file).at(file)?;
                let zeros = vec![0u8; 1 << 20];
                let mut at = *pos;
                while at < *end {
                    let n = (end - at).min(zeros.len() as u64) as usize;
                    f.write_all_at(&zeros[..n], at).at(file)?;
                    at += n as u64;
                }
                f.sync_data().at(file)?;
            }
        }
        Fix::Blank { file, pos, size } => {
            ctx.act(format!(
                "write an end-of-file blank record at {pos} of {} (the damaged rest of the file, {size} bytes, holds no whole record)",
                file.display()
            ));
            if !dry {
                ctx.backup_range(file, *pos, 8)?;
                write_at(file, *pos, &record::blank_record(*size as u32))?;
            }
        }
        Fix::Quarantine {
            file,
            file_start,
            pos,
            len,
        } => {
            ctx.act(format!(
                "replace {len} damaged bytes at {pos} of {} (commit log offset {}) with a {QUARANTINE_TOPIC} quarantine record",
                file.display(),
                file_start + pos
            ));
            if !dry {
                let f = std::fs::File::open(file).at(file)?;
                let mut damaged = vec![0u8; *len as usize];
                f.read_exact_at(&mut damaged, *pos).at(file)?;
                let ts = store_time_at(file, pos + len).unwrap_or(last_ts);
                let rec = quarantine_record(&damaged, file_start + pos, ts).ok_or_else(|| {
                    Error::QuarantineTooShort {
                        file: file.clone(),
                        pos: *pos,
                        len: *len,
                    }
                })?;
                ctx.backup_range(file, *pos, *len)?;
                write_at(file, *pos, &rec)?;
            }
        }
        Fix::PhysOffset {
            file,
            file_start,
            pos,
        } => {
            ctx.act(format!(
                "rewrite the PHYSICALOFFSET field of the record at {pos} of {} to {}",
                file.display(),
                file_start + pos
            ));
            if !dry {
                ctx.backup_range(file, pos + 28, 8)?;
                write_at(
                    file,
                    pos + record::pos::PHYSICAL_OFFSET as u64,
                    &((file_start + pos) as i64).to_be_bytes(),
                )?;
            }
        }
        Fix::Header {
            file,
            file_start,
            pos,
            field,
        } => {
            ctx.act(format!(
                "rewrite the {field} of the record at {pos} of {} (commit log offset {}) from {} to {}, as its consume-queue entry has it",
                file.display(),
                file_start + pos,
                field.found(),
                field.want()
            ));
            if !dry {
                let (at, bytes) = field.patch();
                ctx.backup_range(file, pos + at, bytes.len() as u64)?;
                write_at(file, pos + at, &bytes)?;
            }
        }
        Fix::Extend { file, from, to } => {
            ctx.act(format!(
                "extend {} from {from} to {to} bytes with zeros",
                file.display()
            ));
            if !dry {
                let f = OpenOptions::new().write(true).open(file).at(file)?;
                f.set_len(*to).at(file)?;
                f.sync_all().at(file)?;
            }
        }
        Fix::MoveAside { file } => {
            ctx.act(format!("move {} out of the commit log", file.display()));
            if !dry {
                ctx.remove(file)?;
            }
        }
    }
    Ok(())
}

/// A config file's text as RocketMQ writes it (fastjson, tab-indented).
/// fastjson writes the keys of Integer-keyed maps bare — the queue ids of
/// the consumer offset tables and the delay levels of delayOffset.json —
/// and every other key quoted, even a topic or group name made of digits.
fn write_config(name: &str, v: &Value) -> String {
    let int_keys = |path: &[&str]| match name {
        "consumerOffset.json" | "lmqConsumerOffset.json" => {
            fastjson::consumer_offset_int_keys(path)
        }
        "delayOffset.json" => fastjson::delay_offset_int_keys(path),
        _ => false,
    };
    fastjson::to_pretty(v, &int_keys)
}

/// The file name of a config file's path ("" if it has none).
fn file_name(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

/// Replaces a file's contents so that a crash leaves the old or the new
/// text, never a mix ([`fastjson::config_file::replace`]: no `.bak` copy,
/// since the file replaced may be the damaged one and its `.bak` the good).
fn replace_file(path: &Path, text: &str) -> Result<()> {
    fastjson::config_file::replace(path, text).at(path)
}

/// Step 4 of repair: in each parsed config file, offsets past their queue's
/// max offset are lowered to it, and every topic with consume queues but no
/// topics.json entry gets one (without it a broker with
/// autoCreateTopicEnable=false has no route to the messages on disk).
fn fix_config_tables(
    ctx: &mut Ctx<'_>,
    configs: &[(PathBuf, Value)],
    queue_max: &HashMap<(String, i32), u64>,
    now_ms: i64,
) -> Result<()> {
    for (path, v) in configs {
        let name = file_name(path);
        let mut v = v.clone();
        let changed = if name == "topics.json" {
            let added = crate::meta::add_missing_topics(&mut v, queue_max, now_ms);
            if added.table_created {
                ctx.act(format!(
                    "add an empty topicConfigTable to {}",
                    path.display()
                ));
            }
            for (topic, queues) in &added.topics {
                ctx.act(format!(
                    "add topic {topic:?} to {} with TopicConfig defaults and {queues} read and write queues (it has consume queues but no entry)",
                    path.display()
                ));
            }
            added.changed()
        } else {
            let n = crate::meta::clamp_offsets(name, &mut v, queue_max);
            if n > 0 {
                ctx.act(format!(
                    "lower {n} offsets in {} to their queue's max offset",
                    path.display()
                ));
            }
            n > 0
        };
        if changed && !ctx.opts.dry_run {
            ctx.backup_copy(path)?;
            replace_file(path, &write_config(name, &v))?;
        }
    }
    Ok(())
}

fn engine_config(settings: &Settings, checked: &Checked) -> engine::StoreConfig {
    let mut c = settings.config.clone();
    c.mapped_file_size_commit_log = checked.commitlog_size;
    c.mapped_file_size_consume_queue = checked.cq_size;
    c.allocate_next_file = false;
    c
}

/// Runs repair; `say` receives each action as it happens.
pub fn repair(
    settings: &Settings,
    opts: RepairOptions,
    say: &mut dyn FnMut(&str),
) -> Result<RepairOutcome> {
    let root = settings.config.store_path_root_dir.clone();
    // Before the lock: taking it creates a `lock` file.
    ensure_store(&settings.config)?;
    // Hold the store lock while changing files, so no broker starts meanwhile.
    let lock = if opts.dry_run {
        None
    } else {
        Some(
            StoreLock::acquire(&settings.config.lock_path()).map_err(|e| match e {
                StoreError::Locked(_) => Error::InUse(root.clone()),
                source => Error::Engine {
                    what: "cannot take the store lock",
                    source,
                },
            })?,
        )
    };
    let checked = check(settings, opts.show_progress)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut ctx = Ctx {
        root: root.clone(),
        opts,
        backup_dir: root.join(format!("{BACKUP_PREFIX}{stamp}")),
        actions: Vec::new(),
        say,
    };
    let mut outcome = RepairOutcome {
        before: checked.report.clone(),
        actions: Vec::new(),
        unfixable: checked.commitlog.unfixable.clone(),
        after: None,
        backup_dir: None,
    };
    if checked.report.is_clean() {
        (ctx.say)("nothing to repair: the store is clean");
        return Ok(outcome);
    }
    if !outcome.unfixable.is_empty() {
        for p in &outcome.unfixable {
            (ctx.say)(&format!("cannot repair: {p}"));
        }
        (ctx.say)("the commit log's file layout is broken; nothing was changed");
        return Ok(outcome);
    }
    // Left as they are; everything else is still repaired.
    for p in &checked.left_as_is {
        (ctx.say)(&format!("cannot repair: {p}"));
    }
    outcome.unfixable.extend(checked.left_as_is.iter().cloned());

    // 1. Commit log.
    for fix in &checked.commitlog.fixes {
        apply_fix(&mut ctx, fix, checked.commitlog.last_store_timestamp)?;
    }

    // 2. Config files that do not parse.
    for cf in &checked.configs {
        if cf.parsed.is_ok() {
            continue;
        }
        if let Some(bak) = &cf.bak {
            ctx.act(format!("restore {} from its .bak", cf.path.display()));
            if !ctx.opts.dry_run {
                ctx.backup_copy(&cf.path)?;
                replace_file(&cf.path, &write_config(file_name(&cf.path), bak))?;
            }
        } else {
            ctx.act(format!(
                "move unparseable {} aside (the broker starts without it)",
                cf.path.display()
            ));
            if !ctx.opts.dry_run {
                ctx.remove(&cf.path)?;
            }
        }
    }

    // A file fsck cannot read, it cannot judge or safely replace.
    for p in checked.report.problems.iter() {
        if p.kind == Kind::ConfigUnreadable {
            (ctx.say)(&format!(
                "leave {} as it is: it cannot be read (fix its permissions)",
                p.file.display()
            ));
        }
    }

    // 3. Derived files: drop what is wrong, let the engine rebuild it.
    // A header field rewritten in place (or left) changes no derived file.
    let derived_problem = checked.report.problems.iter().any(|p| {
        !matches!(
            p.kind,
            Kind::ConfigUnparseable
                | Kind::ConfigInconsistent
                | Kind::ConfigUnreadable
                | Kind::HeaderMismatch
        )
    });
    if derived_problem {
        for q in &checked.bad_queues {
            if q.exists() {
                ctx.act(format!(
                    "drop consume queue {} (rebuilt from the commit log)",
                    q.display()
                ));
                if !ctx.opts.dry_run {
                    ctx.remove(q)?;
                }
            }
        }
        for p in &checked.cq_strays {
            ctx.act(format!(
                "move {} out of the consume queues (not a <topic>/<queueId> directory)",
                p.display()
            ));
            if !ctx.opts.dry_run {
                ctx.remove(p)?;
            }
        }
        if checked.index_bad {
            let dir = settings.config.index_dir();
            if let Ok(rd) = std::fs::read_dir(&dir) {
                let mut paths: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
                paths.sort();
                for p in paths {
                    ctx.act(format!(
                        "drop index file {} (rebuilt from the commit log)",
                        p.display()
                    ));
                    if !ctx.opts.dry_run {
                        ctx.remove(&p)?;
                    }
                }
            }
        }
        let cp_path = settings.config.checkpoint_path();
        let last = checked.commitlog.last_store_timestamp;
        let mut cp = match checked.checkpoint {
            CheckpointState::Ok(c) => c,
            _ => Checkpoint::default(),
        };
        cp.physic_msg_timestamp = cp.physic_msg_timestamp.min(last);
        cp.logics_msg_timestamp = cp.logics_msg_timestamp.min(last);
        cp.index_msg_timestamp = cp.index_msg_timestamp.min(last);
        cp.dispatched_offset = Some(0);
        ctx.act(format!(
            "write checkpoint {} with dispatched offset 0 (re-dispatch everything)",
            cp_path.display()
        ));
        if !ctx.opts.dry_run {
            ctx.backup_copy(&cp_path)?;
            cp.store(&cp_path).map_err(|source| Error::Engine {
                what: "cannot write the checkpoint",
                source,
            })?;
        }
        ctx.act("open the store with the engine (recovery + dispatch rebuild consume queues and index), then shut it down cleanly".into());
        if !ctx.opts.dry_run {
            drop(lock);
            let store =
                MessageStore::open(engine_config(settings, &checked)).map_err(|source| {
                    Error::Engine {
                        what: "the engine could not open the repaired store",
                        source,
                    }
                })?;
            store.shutdown().map_err(|source| Error::Engine {
                what: "engine shutdown",
                source,
            })?;
            drop(store);
        }
    } else {
        drop(lock);
    }

    // 4. Config tables against the queues as step 3 leaves them.
    if ctx.opts.dry_run {
        // Nothing was changed: plan against the queues as they are and the
        // config files as step 2 would leave them.
        let planned: Vec<(PathBuf, Value)> = checked
            .configs
            .iter()
            .filter_map(|cf| {
                let v = cf.parsed.clone().ok().or_else(|| cf.bak.clone())?;
                Some((cf.path.clone(), v))
            })
            .collect();
        fix_config_tables(&mut ctx, &planned, &checked.queue_max, stamp)?;
        outcome.actions = ctx.actions;
        return Ok(outcome);
    }
    let mid = check(settings, false)?;
    let parsed: Vec<(PathBuf, Value)> = mid
        .configs
        .iter()
        .filter_map(|cf| Some((cf.path.clone(), cf.parsed.clone().ok()?)))
        .collect();
    fix_config_tables(&mut ctx, &parsed, &mid.queue_max, stamp)?;
    let after = check(settings, false)?;
    outcome.actions = ctx.actions;
    if opts.backup && ctx.backup_dir.exists() {
        outcome.backup_dir = Some(ctx.backup_dir.clone());
    }
    outcome.after = Some(after.report);
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::write_config;

    #[test]
    fn config_files_keep_integer_keys_bare_only_where_fastjson_does() {
        let offsets = serde_json::json!({"offsetTable": {"123@G": {"0": 5, "1": 7}}});
        let text = write_config("consumerOffset.json", &offsets);
        assert!(text.contains("\"123@G\":{"), "{text}");
        assert!(text.contains("\t0:5,"), "{text}");
        let delay = serde_json::json!({"offsetTable": {"1": 5}});
        assert!(write_config("delayOffset.json", &delay).contains("\t1:5"));
        // A topic named with digits is a String key: quoted.
        let topics = serde_json::json!({"topicConfigTable": {"123": {"perm": 6}}});
        let text = write_config("topics.json", &topics);
        assert!(text.contains("\"123\":{"), "{text}");
    }
}

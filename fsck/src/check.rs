//! `check`: reads every store file (without changing a byte) and collects
//! problems, plus what `repair` needs to fix them.
//!
//! Order: map everything; scan commit log files in parallel (each record is
//! validated and looked up in its consume queue and the index); then check
//! consume queues and index files in parallel against the commit log; then
//! the checkpoint, abort file and config files.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use engine::record::RecordView;
use engine::schedule::DelayLevels;
use rayon::prelude::*;

use crate::commitlog::{self, CommitLogResult, Fix, HeaderField, Missing, RecordCheck};
use crate::error::Result;
use crate::indexfiles::{self, IndexSet, Judge};
use crate::meta::{self, CheckpointState, ConfigFile};
use crate::progress::Progress;
use crate::queues::{self, entry_of, record_at, HeaderMismatch};
use crate::report::{Kind, Problem, Report};
use crate::store::{QueueDir, Settings, Store};

/// A check's full result: the report plus what repair needs.
pub struct Checked {
    pub report: Report,
    pub commitlog: CommitLogResult,
    /// Queue directories with problems (to drop and rebuild).
    pub bad_queues: Vec<PathBuf>,
    /// Paths in `consumequeue/` that are no `<topic>/<queueId>/` directory.
    pub cq_strays: Vec<PathBuf>,
    /// Problems repair leaves as they are, repairing the rest: fixing them
    /// could lose or move a message its consume queue serves.
    pub left_as_is: Vec<Problem>,
    /// Whether any index file has a problem (the index is rebuilt whole).
    pub index_bad: bool,
    pub checkpoint: CheckpointState,
    pub configs: Vec<ConfigFile>,
    pub queue_max: HashMap<(String, i32), u64>,
    pub abort_present: bool,
    pub commitlog_size: u64,
    pub cq_size: u64,
}

struct Lookups<'a> {
    queues: HashMap<(&'a str, i32), &'a QueueDir>,
    index: IndexSet<'a>,
}

impl RecordCheck for Lookups<'_> {
    fn cq_has(&self, v: &RecordView<'_>, phys: u64) -> bool {
        let Some(q) = self.queues.get(&(v.topic, v.queue_id)) else {
            return false;
        };
        if v.queue_offset < 0 {
            return false;
        }
        entry_of(q, v.queue_offset as u64).is_some_and(|e| {
            e.is_message() && e.phys_offset == phys as i64 && e.size as usize == v.total_size()
        })
    }
    fn index_has(&self, v: &RecordView<'_>, phys: u64) -> bool {
        self.index.contains(v, phys)
    }
}

/// Runs the check. `Err` only when the store cannot be read at all.
pub fn check(settings: &Settings, show_progress: bool) -> Result<Checked> {
    let t0 = Instant::now();
    let store = Store::open(settings)?;
    let delay = DelayLevels::parse(&store.config.message_delay_level)?;
    let progress = Progress::new("check", store.total_bytes(), show_progress);
    let lookups = Lookups {
        queues: store.queue_map(),
        index: IndexSet::new(&store),
    };

    // The record scan looks up consume queues and the index at random: read
    // those files sequentially first. A file longer than its configured size
    // (a sparse `truncate -s 1T`) is checked only that far, as RocketMQ maps
    // only that much (and refuses the file): reading all of it could take hours.
    let index_size = store.index_layout.file_size();
    store
        .index
        .par_iter()
        .map(|m| (m, index_size))
        .chain(
            store
                .queues
                .par_iter()
                .flat_map(|q| q.files.par_iter().map(|f| (&f.file, store.cq_size))),
        )
        .for_each(|(m, limit)| m.preload(limit));
    let scans: Vec<commitlog::FileScan> = store
        .commitlog
        .par_iter()
        .map(|f| {
            commitlog::scan_file(
                &f.file.path,
                f.start,
                f.file.bytes_within(store.commitlog_size),
                &lookups,
                &|n| progress.add(n),
                &|at, len| f.file.will_need(at, len),
            )
        })
        .collect();
    let mut cl = commitlog::assemble(&store, &scans);
    let mut problems = cl.problems.clone();

    // Records without their consume-queue entry / index keys.
    let mut missing: HashMap<(String, i32), Missing<(u64, i64)>> = HashMap::new();
    let mut missing_index = Missing::default();
    let mut unqueued = HashSet::new();
    for s in scans {
        for (k, m) in s.missing_cq {
            missing.entry(k).or_default().merge(m);
        }
        missing_index.merge(s.missing_index);
        unqueued.extend(s.unqueued);
    }

    let queue_results: Vec<queues::QueueResult> = store
        .queues
        .par_iter()
        .map(|q| {
            let r = queues::check_queue(&store, q, &cl.damaged, cl.end, &delay);
            progress.add(q.files.iter().map(|f| f.file.len).sum());
            r
        })
        .collect();

    let (configs, unreadable_configs) = meta::read_configs(&store.config.config_dir());
    let verdicts = judge_header_mismatches(
        &store,
        &cl,
        queue_results
            .iter()
            .flat_map(|r| r.header_mismatches.iter().cloned())
            .collect(),
        &lookups,
        &Counted {
            unqueued: &unqueued,
            configured_topics: &configured_topics(&configs),
        },
        &mut missing,
        &mut missing_index,
    );
    problems.extend(verdicts.problems);
    cl.fixes.extend(verdicts.fixes);

    let mut bad_queues: HashSet<PathBuf> = HashSet::new();
    let cq_root = store.config.consume_queue_dir();
    let mut missing_sorted: Vec<_> = missing.into_iter().filter(|(_, m)| m.count > 0).collect();
    missing_sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for ((topic, qid), m) in missing_sorted {
        let dir = cq_root.join(&topic).join(qid.to_string());
        let first = m
            .first
            .first()
            .map(|(phys, qo)| format!(" (first: queue offset {qo} at commit log offset {phys})"))
            .unwrap_or_default();
        problems.push(Problem::new(
            Kind::CqMissingEntry,
            &dir,
            None,
            format!("{} records have no consume-queue entry{first}", m.count),
        ));
        bad_queues.insert(dir);
    }
    let mut index_bad = false;
    if missing_index.count > 0 {
        index_bad = true;
        let first = missing_index
            .first
            .first()
            .map(|phys| format!(" (first at commit log offset {phys})"))
            .unwrap_or_default();
        problems.push(Problem::new(
            Kind::IndexMissingEntry,
            &store.config.index_dir(),
            None,
            format!(
                "{} records have keys missing from the index{first}",
                missing_index.count
            ),
        ));
    }

    let mut queue_max = HashMap::new();
    let (mut cq_files, mut cq_entries) = (0, 0);
    for (q, r) in store.queues.iter().zip(&queue_results) {
        cq_files += r.files;
        cq_entries += r.entries;
        queue_max.insert((q.topic.clone(), q.queue_id), r.max_offset);
        if !r.problems.is_empty() {
            bad_queues.insert(q.dir.clone());
        }
        problems.extend(r.problems.iter().cloned());
    }
    for p in &store.cq_strays {
        problems.push(Problem::new(
            Kind::CqFileName,
            p,
            None,
            "not a <topic>/<queueId> consume-queue directory",
        ));
    }

    let index_results: Vec<indexfiles::IndexResult> = store
        .index
        .par_iter()
        .map(|m| {
            let r = indexfiles::check_index_file(&store, m, &cl.damaged, cl.end, &verdicts.judge);
            progress.add(m.len);
            r
        })
        .collect();
    let mut index_entries = 0;
    for r in &index_results {
        index_entries += r.entries;
        index_bad |= !r.problems.is_empty();
        problems.extend(r.problems.iter().cloned());
    }
    for p in &store.index_strays {
        index_bad = true;
        problems.push(Problem::new(
            Kind::IndexFileName,
            p,
            None,
            "not an index file (name is not a 17-digit timestamp)",
        ));
    }
    progress.finish();

    let cp_path = store.config.checkpoint_path();
    let checkpoint = meta::read_checkpoint(&cp_path);
    problems.extend(meta::check_checkpoint(
        &cp_path,
        &checkpoint,
        cl.records,
        cl.end,
        cl.last_store_timestamp,
    ));
    let abort_path = store.config.abort_path();
    let abort_present = abort_path.exists();
    if abort_present {
        problems.push(Problem::new(
            Kind::UncleanShutdown,
            &abort_path,
            None,
            "abort file present: the broker did not shut down cleanly",
        ));
    }
    problems.extend(unreadable_configs);
    problems.extend(meta::check_configs(&configs, &queue_max));

    let mut bad_queues: Vec<PathBuf> = bad_queues
        .into_iter()
        .filter(|q| !verdicts.protected.contains(q))
        .collect();
    bad_queues.sort();
    let mut report = Report {
        store: store.root.clone(),
        notes: store.notes.clone(),
        ..Default::default()
    };
    let t = &mut report.totals;
    t.commitlog_files = store.commitlog.len() as u64;
    t.consume_queue_files = cq_files;
    t.index_files = store.index.len() as u64;
    t.other_files = (configs.len() + usize::from(abort_present)) as u64
        + u64::from(!matches!(checkpoint, CheckpointState::Missing));
    t.records = cl.records;
    t.quarantined_records = cl.quarantined;
    t.consume_queue_entries = cq_entries;
    t.index_entries = index_entries;
    t.bytes = store.total_bytes();
    t.commitlog_end = cl.end;
    t.seconds = t0.elapsed().as_secs_f64();
    report.problems = problems;
    Ok(Checked {
        report,
        commitlog: cl,
        bad_queues,
        cq_strays: store.cq_strays.clone(),
        left_as_is: verdicts.left_as_is,
        index_bad,
        checkpoint,
        configs,
        queue_max,
        abort_present,
        commitlog_size: store.commitlog_size,
        cq_size: store.cq_size,
    })
}

/// Topics named in topics.json, or in its .bak (which repair may restore).
fn configured_topics(configs: &[ConfigFile]) -> HashSet<String> {
    configs
        .iter()
        .filter(|cf| cf.path.file_name().is_some_and(|n| n == "topics.json"))
        .flat_map(|cf| cf.parsed.as_ref().ok().into_iter().chain(cf.bak.as_ref()))
        .filter_map(|v| v.get("topicConfigTable")?.as_object())
        .flat_map(|table| table.keys().cloned())
        .collect()
}

/// What the scans and config files say about which queues hold records,
/// beyond the consume queues themselves.
struct Counted<'a> {
    /// (topic, queue id) of records that get no consume-queue entry.
    unqueued: &'a HashSet<(String, i32)>,
    configured_topics: &'a HashSet<String>,
}

/// What check concluded about records whose header disagrees with the
/// consume-queue entry pointing at them.
#[derive(Default)]
struct HeaderVerdicts {
    problems: Vec<Problem>,
    fixes: Vec<Fix>,
    left_as_is: Vec<Problem>,
    /// Queue directories repair must not drop: rebuilt from the commit log
    /// they would lose (or gain) a record whose header is left damaged.
    protected: HashSet<PathBuf>,
    /// How index entries pointing at these records are judged.
    judge: HashMap<u64, Judge>,
}

/// Decides which header mismatches repair rewrites in place: a wrong
/// QUEUEOFFSET always (the queue check made sure the entry is in its place);
/// a wrong topic or QUEUEID only when nothing else in the store has the
/// queue the header names (no consume queue, no other record, for a topic no
/// topics.json entry), so the consume-queue entry is surely the right side.
/// Otherwise the record and both queues are left as they are, rather than
/// move the message to the queue its damaged header names. Either way the
/// records were counted as missing from that queue (and from the index, for
/// a damaged topic) by the scan; they are taken back here, so no queue is
/// rebuilt for them.
fn judge_header_mismatches(
    store: &Store,
    cl: &CommitLogResult,
    mismatches: Vec<HeaderMismatch>,
    lookups: &Lookups<'_>,
    counted: &Counted<'_>,
    missing: &mut HashMap<(String, i32), Missing<(u64, i64)>>,
    missing_index: &mut Missing<u64>,
) -> HeaderVerdicts {
    let mut out = HeaderVerdicts::default();
    if mismatches.is_empty() {
        return out;
    }
    let mut entries_per_record: HashMap<u64, usize> = HashMap::new();
    // Per queue a damaged header names: how many such records name it.
    let mut named: HashMap<(String, i32), u64> = HashMap::new();
    for m in &mismatches {
        *entries_per_record.entry(m.phys).or_default() += 1;
        if let Some(q) = header_queue(m) {
            *named.entry(q).or_default() += 1;
        }
    }
    let queue_dirs: HashSet<(&str, i32)> = store
        .queues
        .iter()
        .map(|q| (q.topic.as_str(), q.queue_id))
        .collect();
    let missing_from = |matches: &dyn Fn(&(String, i32)) -> bool| -> u64 {
        missing
            .iter()
            .filter(|(k, _)| matches(k))
            .map(|(_, m)| m.count)
            .sum()
    };
    let named_in = |matches: &dyn Fn(&(String, i32)) -> bool| -> u64 {
        named
            .iter()
            .filter(|(k, _)| matches(k))
            .map(|(_, n)| n)
            .sum()
    };
    let mut verdicts = Vec::new();
    for m in &mismatches {
        let why_not: Option<String> = if entries_per_record[&m.phys] > 1 {
            Some("another consume-queue entry points at the record too".into())
        } else {
            match &m.field {
                HeaderField::QueueOffset { .. } => None,
                HeaderField::QueueId { found, .. } => {
                    let key = (m.topic.clone(), *found);
                    let this = |k: &(String, i32)| *k == key;
                    if queue_dirs.contains(&(m.topic.as_str(), *found)) {
                        Some(format!("{}/{found} has a consume queue", m.topic))
                    } else if counted.unqueued.contains(&key)
                        || missing_from(&this) > named_in(&this)
                    {
                        Some(format!("{}/{found} has other records", m.topic))
                    } else {
                        None
                    }
                }
                HeaderField::Topic { found, .. } => {
                    let this = |k: &(String, i32)| k.0 == *found;
                    if queue_dirs.iter().any(|(t, _)| t == found) {
                        Some(format!("{found:?} has consume queues"))
                    } else if counted.configured_topics.contains(found) {
                        Some(format!("{found:?} has a topics.json entry"))
                    } else if counted.unqueued.iter().any(|k| k.0 == *found)
                        || missing_from(&this) > named_in(&this)
                    {
                        Some(format!("{found:?} has other records"))
                    } else {
                        None
                    }
                }
            }
        };
        verdicts.push(why_not);
    }

    let cq_root = store.config.consume_queue_dir();
    let mut taken_back = HashSet::new();
    for (m, why_not) in mismatches.into_iter().zip(verdicts) {
        let (Some(v), Some((f, rel))) = (
            record_at(store, &cl.damaged, cl.end, m.phys),
            store.locate(m.phys),
        ) else {
            continue;
        };
        let queue = format!("{}/{}", m.topic, m.queue_id);
        let agrees = match m.field {
            HeaderField::QueueOffset { .. } => {
                "agrees with it in size and tag code and lies between \
                 the queue's neighbouring entries in commit log order"
            }
            _ => "agrees with it in size, tag code and queue offset",
        };
        let found = format!(
            "{} is {}, but entry {} of consume queue {queue} points at this record and {agrees}",
            m.field,
            m.field.found(),
            m.entry
        );
        let fixed_topic = match (&m.field, &why_not) {
            (HeaderField::Topic { want, .. }, None) => Some(want.clone()),
            _ => None,
        };
        if taken_back.insert(m.phys) {
            if !lookups.cq_has(&v, m.phys) {
                if let Some(tally) = missing.get_mut(&(v.topic.to_string(), v.queue_id)) {
                    tally.take_back(&(m.phys, v.queue_offset));
                }
            }
            // Only a damaged topic changes the record's index keys.
            let indexed_once_fixed = match &fixed_topic {
                Some(topic) => lookups.index_has(&RecordView { topic, ..v.clone() }, m.phys),
                None => why_not.is_some(),
            };
            if !lookups.index_has(&v, m.phys) && indexed_once_fixed {
                missing_index.take_back(&m.phys);
            }
        }
        match why_not {
            None => {
                out.problems.push(Problem::new(
                    Kind::HeaderMismatch,
                    &f.file.path,
                    Some(rel as u64),
                    format!(
                        "{found}; the body CRC does not cover the field: repair rewrites it to {}",
                        m.field.want()
                    ),
                ));
                if let Some(topic) = fixed_topic {
                    out.judge.insert(m.phys, Judge::AsTopic(topic));
                }
                out.fixes.push(Fix::Header {
                    file: f.file.path.clone(),
                    file_start: f.start,
                    pos: rel as u64,
                    field: m.field,
                });
            }
            Some(why_not) => {
                let mut queues = vec![cq_root.join(&m.topic).join(m.queue_id.to_string())];
                if let Some((t, q)) = header_queue(&m) {
                    queues.push(cq_root.join(t).join(q.to_string()));
                }
                let p = Problem::new(
                    Kind::HeaderMismatch,
                    &f.file.path,
                    Some(rel as u64),
                    format!(
                        "{found}; {why_not}, so which side is damaged is unclear: repair leaves the record, its index entries and the consume queues {} as they are",
                        queues
                            .iter()
                            .map(|q| q.strip_prefix(&cq_root).unwrap_or(q).display().to_string())
                            .collect::<Vec<_>>()
                            .join(" and ")
                    ),
                );
                out.problems.push(p.clone());
                out.left_as_is.push(p);
                out.protected.extend(queues);
                out.judge.insert(m.phys, Judge::Skip);
            }
        }
    }
    out
}

/// The queue a mismatched record's header names, when not the queue whose
/// entry points at it.
fn header_queue(m: &HeaderMismatch) -> Option<(String, i32)> {
    match &m.field {
        HeaderField::QueueOffset { .. } => None,
        HeaderField::QueueId { found, .. } => Some((m.topic.clone(), *found)),
        HeaderField::Topic { found, .. } => Some((found.clone(), m.queue_id)),
    }
}

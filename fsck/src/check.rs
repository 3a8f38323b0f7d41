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

use crate::commitlog::{self, CommitLogResult, RecordCheck};
use crate::error::Result;
use crate::indexfiles::{self, IndexSet};
use crate::meta::{self, CheckpointState, ConfigFile};
use crate::progress::Progress;
use crate::queues::{self, entry_of};
use crate::report::{Kind, Problem, Report};
use crate::store::{QueueDir, Settings, Store};

/// A check's full result: the report plus what repair needs.
pub struct Checked {
    pub report: Report,
    pub commitlog: CommitLogResult,
    /// Queue directories with problems (to drop and rebuild).
    pub bad_queues: Vec<PathBuf>,
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
    // those files sequentially first.
    store
        .index
        .par_iter()
        .chain(
            store
                .queues
                .par_iter()
                .flat_map(|q| q.files.par_iter().map(|f| &f.file)),
        )
        .for_each(|m| m.preload());
    let scans: Vec<commitlog::FileScan> = store
        .commitlog
        .par_iter()
        .map(|f| {
            commitlog::scan_file(
                &f.file.path,
                f.start,
                f.file.bytes(),
                &lookups,
                &|n| progress.add(n),
                &|at, len| f.file.will_need(at, len),
            )
        })
        .collect();
    let cl = commitlog::assemble(&store, &scans);
    let mut problems = cl.problems.clone();

    // Records without their consume-queue entry / index keys.
    let mut missing: HashMap<(String, i32), (u64, u64, i64)> = HashMap::new();
    let mut missing_index = (0u64, 0u64);
    for s in &scans {
        for (k, (n, phys, qo)) in &s.missing_cq {
            let e = missing.entry(k.clone()).or_insert((0, *phys, *qo));
            e.0 += n;
        }
        if s.missing_index.0 > 0 {
            if missing_index.0 == 0 {
                missing_index.1 = s.missing_index.1;
            }
            missing_index.0 += s.missing_index.0;
        }
    }
    let mut bad_queues: HashSet<PathBuf> = HashSet::new();
    let cq_root = store.config.consume_queue_dir();
    let mut missing_sorted: Vec<_> = missing.into_iter().collect();
    missing_sorted.sort();
    for ((topic, qid), (n, phys, qo)) in missing_sorted {
        let dir = cq_root.join(&topic).join(qid.to_string());
        problems.push(Problem::new(
            Kind::CqMissingEntry,
            &dir,
            None,
            format!(
                "{n} records have no consume-queue entry (first: queue offset {qo} at commit log offset {phys})"
            ),
        ));
        bad_queues.insert(dir);
    }
    let mut index_bad = false;
    if missing_index.0 > 0 {
        index_bad = true;
        problems.push(Problem::new(
            Kind::IndexMissingEntry,
            &store.config.index_dir(),
            None,
            format!(
                "{} records have keys missing from the index (first at commit log offset {})",
                missing_index.0, missing_index.1
            ),
        ));
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
            let r = indexfiles::check_index_file(&store, m, &cl.damaged, cl.end);
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
    let (configs, unreadable_configs) = meta::read_configs(&store.config.config_dir());
    problems.extend(unreadable_configs);
    problems.extend(meta::check_configs(&configs, &queue_max));

    let mut bad_queues: Vec<PathBuf> = bad_queues.into_iter().collect();
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
        index_bad,
        checkpoint,
        configs,
        queue_max,
        abort_present,
        commitlog_size: store.commitlog_size,
        cq_size: store.cq_size,
    })
}

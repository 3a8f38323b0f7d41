//! `rmq-bench`: benchmarks of the engine's write path against the disk's own
//! ceilings (`flush`, `disk`), and a load generator over the remoting
//! protocol against any RocketMQ 4.x name server (`produce`, `consume`).
//!
//! Modules, one per concept: [`disk`] (ceiling probes), [`scenario`] (one
//! flush-strategy run), [`report`] (tables and target checks), [`output`]
//! (JSON and SVG), [`stats`] (histogram summaries), [`remote`] (route,
//! topic creation, tagged bodies, /proc figures, `--spawn-broker`),
//! [`produce`] (pipelined senders), [`consume`] (pull, exactly-once check,
//! send → consume latency).

mod consume;
mod disk;
mod output;
mod produce;
mod read;
mod remote;
mod report;
mod scenario;
mod stats;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use engine::config::ConfigValue;
use engine::{FlushDiskType, FlushMechanism};
use hdrhistogram::Histogram;

use crate::disk::{DiskCeilings, ProbeLimits, Yardstick};

/// The same allocator as the broker binaries, so engine runs here cost what
/// they cost inside rmq-broker.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use crate::scenario::{Limits, RunResult, RunSpec};

static STOP: AtomicBool = AtomicBool::new(false);

#[derive(Parser)]
#[command(
    name = "rmq-bench",
    about = "Benchmarks of the RocketMQ-compatible store engine"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Flush strategies x warm-up x allocator x message size x writers, plus
    /// the disk's ceilings and the file-roll stall, in one run.
    Flush(Box<FlushArgs>),
    /// Only the disk ceiling probes.
    Disk(DiskArgs),
    /// Load generator: SEND_MESSAGE_V2 over TCP to the brokers of a topic
    /// (sync, pipelined async, oneway); throughput, latency, errors by code.
    Produce(Box<produce::ProduceArgs>),
    /// Pull a topic to the end and check every produced message arrived
    /// once; or --latency: send → long-polling consumer latency.
    Consume(Box<consume::ConsumeArgs>),
    /// Read path: sequential get_messages batches, random read_record,
    /// dispatch lag under maximum-rate appends.
    Read(Box<read::ReadArgs>),
}

#[derive(Args, Clone)]
struct DiskArgs {
    /// Directory for store and probe files (default: a temp dir on the same
    /// disk as /work, never tmpfs).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Samples per disk latency probe.
    #[arg(long, default_value_t = 3000)]
    disk_samples: usize,
    /// Longest time per disk latency probe, seconds.
    #[arg(long, default_value_t = 3.0)]
    disk_seconds: f64,
    /// MiB written by the sequential bandwidth probe.
    #[arg(long, default_value_t = 512)]
    seq_mib: u64,
    /// Write results as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct FlushArgs {
    #[command(flatten)]
    disk: DiskArgs,
    /// Seconds per run (fractions allowed).
    #[arg(long)]
    seconds: Option<f64>,
    /// Messages per run (over all writers); with --seconds, whichever ends first.
    #[arg(long)]
    messages: Option<u64>,
    /// ASYNC_FLUSH and/or SYNC_FLUSH.
    #[arg(long, value_delimiter = ',', value_parser = parse_mode)]
    mode: Vec<FlushDiskType>,
    /// MSYNC, FDATASYNC, WRITE_FDATASYNC, IO_URING (SYNC_FLUSH: all by
    /// default; ASYNC_FLUSH: MSYNC unless given).
    #[arg(long, value_delimiter = ',', value_parser = parse_mechanism)]
    mechanism: Vec<FlushMechanism>,
    /// Message body sizes (128, 1KiB, 4K, 65536 ...).
    #[arg(long, value_delimiter = ',', value_parser = parse_bytes, default_value = "128,1KiB,4KiB,64KiB")]
    size: Vec<u64>,
    /// Concurrent writers.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    writers: Vec<usize>,
    /// What a writer is: `threads` (OS threads blocking in put_message) and/or
    /// `tasks` (tokio tasks awaiting put_message_async on one runtime thread,
    /// as the broker's connections do).
    #[arg(long, value_delimiter = ',', value_parser = parse_writer_kind, default_value = "threads")]
    writer_kind: Vec<bool>,
    /// With `tasks`: the runtime thread spins through each group commit
    /// instead of sleeping (`MessageStore::park_hook`; the broker does not
    /// install it, see the README): on, off.
    #[arg(long, value_delimiter = ',', value_parser = parse_on_off, default_value = "on")]
    park_spin: Vec<bool>,
    /// warmMapedFileEnable: on, off.
    #[arg(long, value_delimiter = ',', value_parser = parse_on_off, default_value = "off,on")]
    warm: Vec<bool>,
    /// allocateNextFileEnable (background preallocation): on, off.
    #[arg(long, value_delimiter = ',', value_parser = parse_on_off, default_value = "on,off")]
    allocator: Vec<bool>,
    /// Commit log file size for the matrix (mappedFileSizeCommitLog).
    #[arg(long, value_parser = parse_bytes, default_value = "1GiB")]
    file_size: u64,
    /// Seconds to wait after opening each store before measuring.
    #[arg(long, default_value_t = 0.0)]
    settle: f64,
    /// Skip the roll-stall runs.
    #[arg(long)]
    no_roll: bool,
    /// Run only the roll-stall runs (and the disk probe).
    #[arg(long, conflicts_with = "no_roll")]
    roll_only: bool,
    /// Commit log file size for the roll-stall runs.
    #[arg(long, value_parser = parse_bytes, default_value = "64MiB")]
    roll_file_size: u64,
    /// Seconds per roll-stall run (default: --seconds).
    #[arg(long)]
    roll_seconds: Option<f64>,
    /// Paces the roll-stall writer to this many MB/s of message bodies
    /// (default: as fast as it can). At a rate the disk absorbs, the
    /// longest roll append shows the roll's own cost; flat out, any append
    /// may wait milliseconds for dirty-page write-back throttling.
    #[arg(long)]
    roll_rate: Option<f64>,
    /// Flush type for the roll-stall runs (1 writer, 1 KiB, MSYNC).
    #[arg(long, value_parser = parse_mode, default_value = "ASYNC_FLUSH")]
    roll_mode: FlushDiskType,
    /// Skip the disk ceiling probes (no SYNC_FLUSH targets then).
    #[arg(long)]
    no_disk: bool,
    /// Samples of probe (a) (4 KiB append + fdatasync) taken again right
    /// before each SYNC_FLUSH run and after the last; the SYNC_FLUSH
    /// targets use all of probe (a)'s samples pooled. 0: the first probe only.
    #[arg(long, default_value_t = 500)]
    probe_burst: usize,
    /// SVG plot of latency by percentile, one series per run; throughput
    /// over time goes to the same name with `-throughput` added.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// No progress line on stderr.
    #[arg(long)]
    quiet: bool,
}

fn parse_mode(s: &str) -> Result<FlushDiskType, String> {
    FlushDiskType::parse_value(s)
        .ok_or_else(|| format!("`{s}`: expected ASYNC_FLUSH or SYNC_FLUSH"))
}

fn parse_mechanism(s: &str) -> Result<FlushMechanism, String> {
    FlushMechanism::parse_value(s)
        .ok_or_else(|| format!("`{s}`: expected {}", FlushMechanism::EXPECTED))
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(format!("`{s}`: expected on or off")),
    }
}

/// `128`, `1K`, `1KiB`, `64k`, `1G`, `64MiB`.
fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let digits = lower.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &lower[digits.len()..];
    let mult: u64 = match unit {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("`{s}`: unknown unit")),
    };
    digits
        .trim()
        .parse::<u64>()
        .map(|n| n * mult)
        .map_err(|_| format!("`{s}`: not a size"))
}

const TMPFS_MAGIC: i64 = 0x0102_1994;

fn fs_type(path: &Path) -> (i64, String) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap_or_default();
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return (0, "unknown".into());
    }
    let t = st.f_type as i64;
    let name = match t {
        0xEF53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        TMPFS_MAGIC => "tmpfs",
        0x794C_7630 => "overlayfs",
        _ => "other",
    };
    (t, format!("{name} (0x{t:x})"))
}

fn dev_of(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.dev())
}

/// A directory on the same disk as /work that is not tmpfs.
fn default_dir() -> PathBuf {
    let work = dev_of(Path::new("/work"));
    let candidates = [
        std::env::temp_dir(),
        PathBuf::from("/var/tmp"),
        std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
    ];
    let ok = |p: &Path| p.is_dir() && fs_type(p).0 != TMPFS_MAGIC;
    candidates
        .iter()
        .find(|p| ok(p) && (work.is_none() || dev_of(p) == work))
        .or_else(|| candidates.iter().find(|p| ok(p)))
        .cloned()
        .unwrap_or_else(|| PathBuf::from("."))
}

fn resolve_dir(d: &DiskArgs) -> PathBuf {
    let dir = d.dir.clone().unwrap_or_else(default_dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        std::process::exit(2);
    }
    let (t, name) = fs_type(&dir);
    if t == TMPFS_MAGIC {
        eprintln!(
            "warning: {} is tmpfs; fsync figures will be meaningless",
            dir.display()
        );
    }
    eprintln!("# working directory: {} [{name}]", dir.display());
    dir
}

fn install_stop_handler() {
    let r = ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            eprintln!("\nsecond interrupt: exiting now");
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: finishing the current run and reporting what was measured (Ctrl-C again to abort)");
    });
    if let Err(e) = r {
        eprintln!("warning: cannot install Ctrl-C handler: {e}");
    }
}

/// The disk's ceilings, and probe (a)'s samples (to pool with later bursts).
fn probe_disk(d: &DiskArgs, dir: &Path, quiet: bool) -> Option<(DiskCeilings, Histogram<u64>)> {
    if !quiet {
        eprintln!("# probing the disk (append/overwrite/msync + fdatasync, sequential write)...");
    }
    let limits = ProbeLimits {
        samples: d.disk_samples,
        max_time: Duration::from_secs_f64(d.disk_seconds),
        seq_bytes: d.seq_mib << 20,
    };
    let mut pool = stats::new_hist();
    match disk::probe(dir, &limits, &STOP, &mut pool) {
        Ok(c) => Some((c, pool)),
        Err(e) => {
            eprintln!("disk probe failed: {e}");
            None
        }
    }
}

fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn build_report(
    dir: &Path,
    disk: Option<DiskCeilings>,
    runs: Vec<RunResult>,
    roll_runs: Vec<RunResult>,
) -> output::Report {
    let targets = report::checks(&runs, &roll_runs, disk.as_ref());
    output::Report {
        tool: "rmq-bench",
        unix_time: unix_time(),
        command: std::env::args().collect(),
        dir: dir.display().to_string(),
        filesystem: fs_type(dir).1,
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        disk,
        runs,
        roll_runs,
        targets,
        interrupted: STOP.load(Ordering::SeqCst),
    }
}

fn write_json(path: &Path, r: &output::Report) {
    match output::write_json(path, r) {
        Ok(()) => eprintln!("# wrote {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}

fn cmd_disk(d: DiskArgs) -> i32 {
    install_stop_handler();
    let dir = resolve_dir(&d);
    let disk = probe_disk(&d, &dir, false).map(|(c, _)| c);
    if let Some(c) = &disk {
        print!("{}", report::disk_table(c));
    }
    let rep = build_report(&dir, disk, Vec::new(), Vec::new());
    if let Some(p) = &d.json {
        write_json(p, &rep);
    }
    if rep.disk.is_some() {
        0
    } else {
        1
    }
}

fn matrix(a: &FlushArgs) -> Vec<RunSpec> {
    let modes = if a.mode.is_empty() {
        vec![FlushDiskType::AsyncFlush, FlushDiskType::SyncFlush]
    } else {
        a.mode.clone()
    };
    let all = [
        FlushMechanism::Msync,
        FlushMechanism::Fdatasync,
        FlushMechanism::WriteFdatasync,
        FlushMechanism::IoUring,
    ];
    let mut strategies = Vec::new();
    for m in &modes {
        let mechs: Vec<FlushMechanism> = match (m, a.mechanism.is_empty()) {
            (FlushDiskType::AsyncFlush, true) => vec![FlushMechanism::Msync],
            (_, true) => all.to_vec(),
            (_, false) => a.mechanism.clone(),
        };
        for mech in mechs {
            strategies.push((*m, mech));
        }
    }
    let mut out = Vec::new();
    for (mode, mechanism) in strategies {
        for &warm in &a.warm {
            for &allocator in &a.allocator {
                for &size in &a.size {
                    for &writers in &a.writers {
                        for &tasks in &a.writer_kind {
                            // Spinning is a property of task writers only.
                            let spins: &[bool] = if tasks { &a.park_spin } else { &[false] };
                            for &park_spin in spins {
                                out.push(RunSpec {
                                    mode,
                                    mechanism,
                                    warm,
                                    allocator,
                                    size: size as usize,
                                    writers,
                                    tasks,
                                    park_spin,
                                    file_size: a.file_size,
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// `threads` → false, `tasks` → true.
fn parse_writer_kind(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "threads" | "thread" => Ok(false),
        "tasks" | "task" => Ok(true),
        other => Err(format!("writer kind `{other}`: expected threads or tasks")),
    }
}

fn roll_specs(a: &FlushArgs) -> Vec<RunSpec> {
    let mut out = Vec::new();
    for &warm in &a.warm {
        for &allocator in &a.allocator {
            out.push(RunSpec {
                mode: a.roll_mode,
                mechanism: FlushMechanism::Msync,
                warm,
                allocator,
                size: 1024,
                writers: 1,
                tasks: false,
                park_spin: false,
                file_size: a.roll_file_size,
            });
        }
    }
    out
}

fn execute(
    specs: &[RunSpec],
    what: &str,
    dir: &Path,
    limits: Limits,
    quiet: bool,
    results: &mut Vec<RunResult>,
    mut before: impl FnMut(&RunSpec),
) {
    for (i, spec) in specs.iter().enumerate() {
        if STOP.load(Ordering::SeqCst) {
            break;
        }
        before(spec);
        let label = format!("[{what} {}/{}] {}", i + 1, specs.len(), spec.label());
        match scenario::run(spec, dir, limits, &STOP, (!quiet).then_some(label.as_str())) {
            Ok(r) => {
                if !quiet {
                    eprintln!(
                        "{label}: {} msg/s, p50 {} µs, p99 {} µs, max {} µs{}",
                        report::thousands(r.msgs_per_sec),
                        report::us(r.latency.p50_us),
                        report::us(r.latency.p99_us),
                        report::us(r.latency.max_us),
                        if r.rolls > 0 {
                            let mut each = r.roll_latencies_us.clone();
                            each.sort_by(|a, b| b.total_cmp(a));
                            let each: Vec<String> = each.iter().map(|&u| report::us(u)).collect();
                            format!(
                                ", {} rolls, longest roll append {} µs (each, longest first: {})",
                                r.rolls,
                                report::us(r.roll_max_us),
                                each.join(" ")
                            )
                        } else {
                            String::new()
                        }
                    );
                }
                results.push(r);
            }
            Err(e) => eprintln!("{label}: failed: {e}"),
        }
    }
}

fn cmd_flush(a: FlushArgs) -> i32 {
    install_stop_handler();
    let dir = resolve_dir(&a.disk);
    let probed = if a.no_disk {
        None
    } else {
        probe_disk(&a.disk, &dir, a.quiet)
    };
    let (mut disk, mut yardstick) = match probed {
        Some((c, pool)) => (Some(c), Some(Yardstick::new(&dir, a.probe_burst, pool))),
        None => (None, None),
    };
    let limits = Limits {
        seconds: a.seconds.or(if a.messages.is_some() {
            None
        } else {
            Some(5.0)
        }),
        messages: a.messages,
        settle: Duration::from_secs_f64(a.settle.max(0.0)),
        pace_bytes_per_sec: None,
    };
    let mut runs = Vec::new();
    if !a.roll_only {
        let specs = matrix(&a);
        let mut burst = |spec: &RunSpec| {
            if spec.mode == FlushDiskType::SyncFlush {
                if let Some(y) = yardstick.as_mut() {
                    y.burst(&STOP);
                }
            }
        };
        execute(
            &specs, "flush", &dir, limits, a.quiet, &mut runs, &mut burst,
        );
        if specs.iter().any(|s| s.mode == FlushDiskType::SyncFlush) {
            if let Some(y) = yardstick.as_mut() {
                y.burst(&STOP);
            }
        }
    }
    if let (Some(c), Some(y)) = (disk.as_mut(), yardstick) {
        y.finish(c);
    }
    if let Some(c) = &disk {
        print!("{}", report::disk_table(c));
        println!();
    }
    let mut rolls = Vec::new();
    if !a.no_roll {
        let rl = Limits {
            seconds: a.roll_seconds.or(limits.seconds),
            pace_bytes_per_sec: a.roll_rate.map(|mb| mb * 1e6),
            ..limits
        };
        execute(
            &roll_specs(&a),
            "roll",
            &dir,
            rl,
            a.quiet,
            &mut rolls,
            |_| {},
        );
    }
    if !runs.is_empty() {
        println!("flush strategies (writers are threads blocking in put_message, or with `tasks` tokio tasks awaiting put_message_async; latency = one put; MB/s = commit log record bytes):");
        print!("{}", report::runs_table(&runs, disk.as_ref()));
        println!();
    }
    if !rolls.is_empty() {
        println!(
            "file-roll stall ({} files, 1 writer, 1 KiB; 'roll max' = longest append that landed in a new file):",
            report::size_label(a.roll_file_size as usize)
        );
        print!("{}", report::runs_table(&rolls, disk.as_ref()));
        println!();
    }
    let rep = build_report(&dir, disk, runs, rolls);
    if !rep.targets.is_empty() {
        println!("targets:");
        print!("{}", report::checks_table(&rep.targets));
    }
    if rep.interrupted {
        println!("(interrupted: results above are partial)");
    }
    if let Some(p) = &a.disk.json {
        write_json(p, &rep);
    }
    if let Some(p) = &a.plot {
        let all: Vec<&RunResult> = rep.runs.iter().chain(&rep.roll_runs).collect();
        let svg = output::svg(
            &all,
            rep.disk.as_ref(),
            "rmq-bench flush: put_message latency by percentile",
        );
        match std::fs::write(p, svg) {
            Ok(()) => eprintln!("# wrote {}", p.display()),
            Err(e) => eprintln!("cannot write {}: {e}", p.display()),
        }
        let series: Vec<(String, Vec<[f64; 2]>)> = all
            .iter()
            .map(|r| (report::row_name(r), r.timeline.clone()))
            .collect();
        let tp = output::throughput_path(p);
        let svg = output::svg_timeline(&series, "rmq-bench flush: appends/s over time");
        match std::fs::write(&tp, svg) {
            Ok(()) => eprintln!("# wrote {}", tp.display()),
            Err(e) => eprintln!("cannot write {}: {e}", tp.display()),
        }
    }
    if rep.runs.is_empty() && rep.roll_runs.is_empty() && !rep.interrupted {
        1
    } else {
        0
    }
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Flush(a) => cmd_flush(*a),
        Cmd::Disk(d) => cmd_disk(d),
        Cmd::Produce(a) => produce::cmd_produce(*a),
        Cmd::Consume(a) => consume::cmd_consume(*a),
        Cmd::Read(a) => read::cmd_read(*a),
    };
    std::process::exit(code);
}

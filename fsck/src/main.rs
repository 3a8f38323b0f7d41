//! The `rmq-fsck` command line. Exit codes: 0 clean, 1 problems found (or
//! left after repair), 2 could not run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use engine::config::{apply_properties, ConfigError, ConfigSection};
use engine::{Properties, StoreConfig};
use fsck::{Error, RepairOptions, Settings};

#[derive(Parser)]
#[command(
    name = "rmq-fsck",
    about = "Check and repair a RocketMQ-format store offline"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Report every problem, changing nothing.
    Check {
        #[command(flatten)]
        store: StoreArgs,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Fix what check finds.
    Repair {
        #[command(flatten)]
        store: StoreArgs,
        /// Print the plan only.
        #[arg(long)]
        dry_run: bool,
        /// Do not keep backups of rewritten or removed files.
        #[arg(long)]
        no_backup: bool,
    },
}

#[derive(Args)]
struct StoreArgs {
    /// The store root (storePathRootDir).
    store_dir: PathBuf,
    /// broker.conf to read file sizes and other store settings from.
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
    /// Commit log file size in bytes (default: inferred from the files, else 1 GiB).
    #[arg(long)]
    commitlog_size: Option<u64>,
    /// Consume-queue file size in bytes (default: inferred, else 6,000,000).
    #[arg(long)]
    cq_size: Option<u64>,
    /// Further store settings as key=value (e.g. maxHashSlotNum=100).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Never show progress.
    #[arg(long)]
    quiet: bool,
}

/// Sends `tracing` events to stderr: the engine reports through them (an
/// unknown config key, what recovery did during repair), and without a
/// subscriber they would be lost. Warnings only by default (`RUST_LOG`
/// overrides), so the engine's routine start-up lines do not bury the report.
fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .init();
}

fn settings(a: &StoreArgs) -> Result<Settings, Error> {
    let mut props = Properties::default();
    if let Some(c) = &a.config {
        props = Properties::load(c)?;
    }
    props.extend(Properties::from_args(&a.set)?);
    let given = |k1: &str, k2: &str| props.get(k1).is_some() || props.get(k2).is_some();
    let cl_given = given("mappedFileSizeCommitLog", "mapedFileSizeCommitLog");
    let cq_given = given("mappedFileSizeConsumeQueue", "mapedFileSizeConsumeQueue");
    let index_layout_given = given("maxHashSlotNum", "maxIndexNum");
    let mut config = StoreConfig::default();
    let sections: &mut [&mut dyn ConfigSection] = &mut [&mut config];
    apply_properties(&props, sections)?;
    config.store_path_root_dir = a.store_dir.clone();
    if props.get("storePathCommitLog").is_none() {
        config.store_path_commit_log = None;
    }
    let mut s = Settings {
        config,
        commitlog_size_given: cl_given,
        cq_size_given: cq_given,
        index_layout_given,
    };
    if let Some(n) = a.commitlog_size {
        s.config.mapped_file_size_commit_log = n;
        s.commitlog_size_given = true;
    }
    if let Some(n) = a.cq_size {
        s.config.mapped_file_size_consume_queue = n;
        s.cq_size_given = true;
    }
    // The engine's own rules (a zero file size would divide by zero later);
    // a bad size is named by the option the user typed it with.
    s.config.validate().map_err(|e| match e {
        ConfigError::BadValue {
            key,
            value,
            expected,
        } => match key.as_str() {
            "mappedFileSizeCommitLog" if a.commitlog_size.is_some() => Error::BadOption {
                option: "--commitlog-size",
                value,
                expected,
            },
            "mappedFileSizeConsumeQueue" if a.cq_size.is_some() => Error::BadOption {
                option: "--cq-size",
                value,
                expected,
            },
            _ => ConfigError::BadValue {
                key,
                value,
                expected,
            }
            .into(),
        },
        e => e.into(),
    })?;
    Ok(s)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.cmd {
        Cmd::Check { store, json } => {
            let s = match settings(&store) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("rmq-fsck: {e}");
                    return ExitCode::from(2);
                }
            };
            match fsck::check(&s, !store.quiet) {
                Ok(c) => {
                    let r = &c.report;
                    if json {
                        match serde_json::to_string_pretty(r) {
                            Ok(t) => println!("{t}"),
                            Err(e) => {
                                eprintln!("rmq-fsck: {e}");
                                return ExitCode::from(2);
                            }
                        }
                    } else {
                        for n in &r.notes {
                            println!("note: {n}");
                        }
                        for p in &r.problems {
                            println!("{p}");
                        }
                        print!("{}", r.summary());
                    }
                    ExitCode::from(if r.is_clean() { 0 } else { 1 })
                }
                Err(e) => {
                    eprintln!("rmq-fsck: cannot check {}: {e}", store.store_dir.display());
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Repair {
            store,
            dry_run,
            no_backup,
        } => {
            let s = match settings(&store) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("rmq-fsck: {e}");
                    return ExitCode::from(2);
                }
            };
            let opts = RepairOptions {
                dry_run,
                backup: !no_backup,
                show_progress: !store.quiet,
            };
            let mut say = |line: &str| println!("{line}");
            match fsck::repair(&s, opts, &mut say) {
                Ok(o) => {
                    println!("before repair: {} problems", o.before.problems.len());
                    if let Some(b) = &o.backup_dir {
                        println!("backups in {}", b.display());
                    }
                    match &o.after {
                        Some(after) => {
                            for p in &after.problems {
                                println!("still: {p}");
                            }
                            print!("after repair: {}", after.summary());
                            ExitCode::from(if after.is_clean() { 0 } else { 1 })
                        }
                        None if dry_run => ExitCode::from(u8::from(!o.before.is_clean())),
                        None => ExitCode::from(u8::from(
                            !o.before.is_clean() && !o.unfixable.is_empty(),
                        )),
                    }
                }
                Err(e) => {
                    eprintln!(
                        "rmq-fsck: repair of {} failed: {e}",
                        store.store_dir.display()
                    );
                    ExitCode::from(2)
                }
            }
        }
    }
}

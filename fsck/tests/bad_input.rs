//! Input fsck cannot work with — bad options, files it cannot read, sizes it
//! cannot tell, directories that hold no store — must stop it with an error
//! that names the culprit (exit code 2), never a panic or a "clean" report.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn run(args: &[&str], root: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rmq-fsck"))
        .args(args)
        .arg(root)
        .arg("--quiet")
        .output()
        .expect("rmq-fsck runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Permission bits do not stop root from reading, so assertions that need a
/// denied read are skipped when the tests run as root.
fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn unreadable_store_paths_are_named() {
    // A file where the commit log directory should be: reading it as a
    // directory fails for root too.
    let (_d, root, _sent) = build(20);
    let cl = root.join("commitlog");
    std::fs::rename(&cl, root.join("commitlog.moved")).expect("move commitlog");
    std::fs::write(&cl, b"not a directory").expect("write");
    let err = fsck::check(&settings(&root), false)
        .err()
        .expect("check fails");
    assert!(err.to_string().contains(&*cl.to_string_lossy()), "{err}");
    let out = run(&["check"], &root);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("commitlog"), "{}", stderr(&out));
}

#[test]
fn unreadable_queue_file_is_named() {
    let (_d, root, _sent) = build(20);
    let cq = root.join("consumequeue/TopicA/1/00000000000000000000");
    chmod(&cq, 0o000);
    let result = fsck::check(&settings(&root), false);
    chmod(&cq, 0o644);
    if running_as_root() {
        return;
    }
    let err = result.err().expect("check fails on an unreadable file");
    assert!(err.to_string().contains(&*cq.to_string_lossy()), "{err}");
}

#[test]
fn zero_or_tiny_file_sizes_are_rejected_by_name() {
    let (_d, root, _sent) = build(20);
    for (args, named) in [
        (&["--commitlog-size", "0"][..], "--commitlog-size"),
        (&["--commitlog-size", "100"][..], "--commitlog-size"),
        (&["--cq-size", "0"][..], "--cq-size"),
        (
            &["--set", "mappedFileSizeCommitLog=0"][..],
            "mappedFileSizeCommitLog",
        ),
        (
            &["--set", "mappedFileSizeConsumeQueue=0"][..],
            "mappedFileSizeConsumeQueue",
        ),
    ] {
        for sub in ["check", "repair"] {
            let mut a = vec![sub];
            a.extend_from_slice(args);
            let out = run(&a, &root);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{a:?}: {err}");
            assert!(err.contains(named), "{a:?}: {err}");
            assert!(!err.contains("panicked"), "{a:?}: {err}");
        }
    }
    // The library refuses them too, rather than dividing by zero.
    let mut config = config(&root);
    config.mapped_file_size_commit_log = 0;
    let err = fsck::check(&fsck::Settings::explicit(config), false)
        .err()
        .expect("check refuses a zero commit log size");
    assert!(err.to_string().contains("mappedFileSizeCommitLog"), "{err}");
}

/// Settings that take both file sizes from the files, as the command line
/// does without `--commitlog-size` / `--cq-size` / `-c`.
fn inferred_settings(root: &Path) -> fsck::Settings {
    fsck::Settings {
        config: config(root),
        commitlog_size_given: false,
        cq_size_given: false,
        // The test stores' small index layout, as config() has it.
        index_layout_given: true,
    }
}

fn set_len(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len))
        .expect("truncate");
}

#[test]
fn size_inferred_from_one_damaged_file_is_refused() {
    // One commit log file, one queue: each size can only come from one file.
    let (_d, root, sent) = build(1);
    assert_eq!(sent.len(), 1);
    let r = fsck::check(&inferred_settings(&root), false).expect("check runs");
    assert!(r.report.is_clean(), "{:#?}", r.report.problems);

    set_len(&commitlog_file(&root, 0), 10_000);
    let err = fsck::check(&inferred_settings(&root), false)
        .err()
        .expect("a 10000-byte commit log file size is not believed");
    assert!(
        matches!(err, fsck::Error::SizeUnknown { size: 10_000, .. }),
        "{err}"
    );
    let out = run(&["check"], &root);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--commitlog-size"),
        "{}",
        stderr(&out)
    );
    // Given the size, check finds the short file.
    let out = run(
        &[
            "check",
            "--commitlog-size",
            &CL_SIZE.to_string(),
            "--set",
            "maxHashSlotNum=64",
            "--set",
            "maxIndexNum=1024",
        ],
        &root,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("commitlog_file_size"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let (_d, root, _sent) = build(1);
    set_len(
        &root.join("consumequeue/TopicB/0/00000000000000000000"),
        1010,
    );
    let err = fsck::check(&inferred_settings(&root), false)
        .err()
        .expect("a 1010-byte consume queue file size is not believed");
    assert!(err.to_string().contains("--cq-size"), "{err}");
}

#[test]
fn unreadable_config_file_is_a_problem_naming_it() {
    // A directory where topics.json should be cannot be read, even by root.
    let (_d, root, _sent) = build(20);
    let topics = root.join("config/topics.json");
    let _ = std::fs::remove_file(&topics);
    std::fs::create_dir_all(&topics).expect("mkdir");
    let r = check(&root);
    let p = r
        .problems
        .iter()
        .find(|p| p.kind == fsck::Kind::ConfigUnreadable)
        .unwrap_or_else(|| panic!("not reported: {:#?}", r.problems));
    assert_eq!(p.file, topics);
    // Repair cannot judge what it cannot read: it leaves it and says so.
    let o = repair_quiet(&root);
    let after = o.after.expect("repair ran");
    assert_eq!(after.count(fsck::Kind::ConfigUnreadable), 1);
    assert!(topics.is_dir());

    // A config file without read permission (not testable as root).
    let (_d, root, _sent) = build(20);
    let offsets = root.join("config/consumerOffset.json");
    std::fs::write(&offsets, "{\"offsetTable\":{}}").expect("write");
    chmod(&offsets, 0o000);
    let r = check(&root);
    chmod(&offsets, 0o644);
    if !running_as_root() {
        assert!(
            r.problems
                .iter()
                .any(|p| p.kind == fsck::Kind::ConfigUnreadable && p.file == offsets),
            "{:#?}",
            r.problems
        );
    }
}

#[test]
fn unknown_setting_is_warned_about() {
    let (_d, root, _sent) = build(20);
    let out = run(&["check", "--set", "fooBar=1"], &root);
    assert!(stderr(&out).contains("fooBar"), "{}", stderr(&out));
}

#[test]
fn directory_without_a_store_is_not_clean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    std::fs::write(empty.join("notes.txt"), b"not a store").expect("write");
    for sub in ["check", "repair"] {
        let out = run(&[sub], &empty);
        assert_eq!(out.status.code(), Some(2), "{sub}: {}", stderr(&out));
        assert!(stderr(&out).contains("holds no store"), "{}", stderr(&out));
    }
    assert!(
        !empty.join("lock").exists(),
        "repair created a lock file in a directory that holds no store"
    );
    let err = fsck::check(&settings(&empty), false)
        .err()
        .expect("check refuses");
    assert!(matches!(err, fsck::Error::NoStore(_)), "{err}");
}

/// A store a running broker holds (its `lock` file locked, its `abort` file
/// present, its last file being written) is refused by check and repair
/// alike, naming the store, and nothing in it changes: a report on files
/// that change under it would be wrong (an "unclean shutdown", a torn tail).
#[test]
fn store_held_by_a_running_broker_is_refused() {
    let (_d, root, _sent) = build(20);
    // This process is the broker; rmq-fsck runs as another process.
    let broker = engine::MessageStore::open(config(&root)).expect("broker opens the store");
    let before = std::fs::read(commitlog_file(&root, 0)).expect("read");
    for args in [
        &["check"][..],
        &["check", "--json"],
        &["repair", "--dry-run"],
        &["repair"],
    ] {
        let out = run(args, &root);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("in use by a running broker"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert!(std::fs::read(commitlog_file(&root, 0)).expect("read") == before);
    broker.shutdown().expect("shutdown");
    drop(broker);
    let index_layout = ["--set", "maxHashSlotNum=64", "--set", "maxIndexNum=1024"];
    let out = run(&[&["check"][..], &index_layout].concat(), &root);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}
/// A commit log or consume-queue file far longer than the configured size
/// (a sparse file, `truncate -s`) is reported without reading it all: RocketMQ
/// maps only the configured size, and refuses such a file anyway.
#[test]
fn huge_file_of_the_wrong_size_is_reported_quickly() {
    let (_d, root, _sent) = build(120);
    let huge = 64u64 << 30;
    let sparse = |path: &Path| {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .and_then(|f| f.set_len(huge))
            .expect("sparse file");
    };
    let cl = commitlog_file(&root, 2 * CL_SIZE);
    sparse(&cl);
    let cq = root.join("consumequeue/TopicA/0/00000000000000001280");
    sparse(&cq);
    let t0 = std::time::Instant::now();
    let r = check(&root);
    let took = t0.elapsed();
    assert!(
        took < std::time::Duration::from_secs(10),
        "check took {took:?}"
    );
    for (kind, path) in [
        (fsck::Kind::CommitlogFileSize, &cl),
        (fsck::Kind::CqFileSize, &cq),
    ] {
        assert!(
            r.problems.iter().any(|p| p.kind == kind && p.file == *path),
            "{kind} for {}: {:#?}",
            path.display(),
            r.problems
        );
    }
}

/// A 20-digit name past the largest offset a record can have (RocketMQ reads
/// names as a Java long, PHYSICALOFFSET is one) is not a commit log file:
/// reported and moved aside like any stray, never an arithmetic overflow.
#[test]
fn file_name_past_the_largest_offset_is_a_stray() {
    let (_d, root, sent) = build(120);
    // u64::MAX + 1 - CL_SIZE: a multiple of the file size, ending at 2^64.
    let name = root.join("commitlog/18446744073709486080");
    let mut bytes = vec![0u8; CL_SIZE as usize];
    bytes[CL_SIZE as usize - 1] = 0x11;
    std::fs::write(&name, bytes).expect("write");
    let r = check(&root);
    assert!(
        r.problems
            .iter()
            .any(|p| p.kind == fsck::Kind::CommitlogFileName && p.file == name),
        "{:#?}",
        r.problems
    );
    let after = repair_quiet(&root).after.expect("repair ran");
    assert!(after.is_clean(), "{:#?}", after.problems);
    assert!(!name.exists());
    assert_readable(&root, &sent);
}

/// The index layout (maxHashSlotNum, maxIndexNum) cannot be read from the
/// files. When it is not given and no index file has the size the default
/// layout needs, the store was written with other settings: check and
/// repair stop and ask for them (exit 2) instead of calling every index
/// file damaged and rebuilding the index in a layout the broker does not use.
#[test]
fn index_layout_not_matching_any_file_is_asked_for() {
    let (_d, root, _sent) = build(40);
    let index_file = std::fs::read_dir(root.join("index"))
        .expect("index dir")
        .flatten()
        .map(|e| e.path())
        .next()
        .expect("an index file");
    let before = std::fs::read(&index_file).expect("read");
    for sub in ["check", "repair"] {
        let out = run(&[sub], &root);
        assert_eq!(out.status.code(), Some(2), "{sub}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("maxHashSlotNum"),
            "{sub}: {}",
            stderr(&out)
        );
    }
    assert!(std::fs::read(&index_file).expect("index file kept") == before);
    let out = run(
        &[
            "check",
            "--set",
            "maxHashSlotNum=64",
            "--set",
            "maxIndexNum=1024",
        ],
        &root,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Given explicitly, a wrong layout is the files' problem.
    let out = run(&["check", "--set", "maxIndexNum=2048"], &root);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

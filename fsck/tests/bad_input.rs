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

mod common;
use common::*;
use std::time::Instant;

fn show(tag: &str, root: &std::path::Path) {
    match fsck::check(&settings(root), false) {
        Ok(c) => {
            eprintln!("== {tag}: {} problems", c.report.problems.len());
            for p in &c.report.problems {
                eprintln!("  {p}");
            }
        }
        Err(e) => eprintln!("== {tag}: ERR {e}"),
    }
}
fn rep(tag: &str, root: &std::path::Path) {
    let mut lines = Vec::new();
    let r = fsck::repair(
        &settings(root),
        fsck::RepairOptions {
            dry_run: false,
            backup: true,
            show_progress: false,
        },
        &mut |l: &str| lines.push(l.to_string()),
    );
    eprintln!(
        "== repair {tag}: {:?}",
        r.as_ref()
            .map(|o| o.after.as_ref().map(|a| a.problems.clone()))
            .map_err(|e| e.to_string())
    );
    for l in lines {
        eprintln!("   | {l}");
    }
}

#[test]
fn p1_gap_and_strays() {
    let (_d, root, _sent) = build(300);
    std::fs::remove_file(commitlog_file(&root, CL_SIZE)).unwrap();
    std::fs::write(root.join("commitlog/junk.tmp"), b"x").unwrap();
    std::fs::write(root.join("consumequeue/TopicA/0/junk"), b"x").unwrap();
    std::fs::write(root.join("index/junk"), b"x").unwrap();
    show("gap", &root);
    rep("gap", &root);
}
#[test]
fn p2_index_header() {
    let (_d, root, sent) = build(120);
    let idx: Vec<_> = std::fs::read_dir(root.join("index"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    flip(&idx[0], 37, 0x40); // indexCount
    flip(&idx[0], 40 + 4 * 3, 0x7f); // a slot
    show("idx", &root);
    rep("idx", &root);
    show("idx after", &root);
    rep("idx2", &root);
    assert_readable(&root, &sent);
}
#[test]
fn p3_checkpoint_and_config() {
    let (_d, root, sent) = build(120);
    std::fs::write(root.join("checkpoint"), b"garbage").unwrap();
    std::fs::write(
        root.join("config/consumerOffset.json"),
        b"{\"offsetTable\":{",
    )
    .unwrap();
    std::fs::write(root.join("config/topics.json"), b"{nope").unwrap();
    std::fs::write(
        root.join("config/topics.json.bak"),
        b"{\"topicConfigTable\":{}}",
    )
    .unwrap();
    show("cp", &root);
    rep("cp", &root);
    show("cp after", &root);
    rep("cp2", &root);
    assert_readable(&root, &sent);
}
#[test]
fn p4_huge_sparse() {
    let (_d, root, _sent) = build(120);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .open(commitlog_file(&root, 2 * CL_SIZE))
        .unwrap();
    f.set_len(8 << 30).unwrap();
    let t = Instant::now();
    show("huge", &root);
    eprintln!("took {:?}", t.elapsed());
}
#[test]
fn p5_mid_damage_and_tail_idempotent() {
    let (_d, root, sent) = build(300);
    let v = sent[150].clone();
    flip(
        &commitlog_file(&root, v.phys / CL_SIZE * CL_SIZE),
        v.phys % CL_SIZE,
        0x40,
    );
    let last = sent.last().unwrap().clone();
    flip(
        &commitlog_file(&root, last.phys / CL_SIZE * CL_SIZE),
        last.phys % CL_SIZE + 60,
        0x40,
    );
    std::fs::write(root.join("abort"), b"").unwrap();
    show("mid", &root);
    rep("mid", &root);
    rep("mid2", &root);
    show("mid after", &root);
}
#[test]
fn p6_empty_commitlog() {
    let (_d, root, _sent) = build(120);
    for e in std::fs::read_dir(root.join("commitlog")).unwrap().flatten() {
        std::fs::remove_file(e.path()).unwrap();
    }
    show("nocl", &root);
    rep("nocl", &root);
    show("nocl after", &root);
}

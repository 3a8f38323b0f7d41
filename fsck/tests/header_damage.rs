//! Damage to a record's header fields that the body CRC does not cover
//! (QUEUEOFFSET, QUEUEID, topic): the consume queue still serves the
//! message, and repair must keep it served at the same queue offset rather
//! than rebuild the queue from the damaged header.

mod common;

use std::os::unix::fs::FileExt;

use common::*;
use engine::record::{self, Decoded};
use engine::{AcceptAll, MessageStore};
use fsck::Kind;

/// The `nth` message sent to `topic`/`queue_id` (its queue offset is `nth`).
fn nth_in_queue(sent: &[Sent], topic: &str, queue_id: i32, nth: usize) -> Sent {
    sent.iter()
        .filter(|s| s.topic == topic && s.queue_id == queue_id)
        .nth(nth)
        .expect("queue holds enough messages")
        .clone()
}

/// Overwrites `bytes` at `at` bytes into the record of `s`.
fn overwrite(root: &std::path::Path, s: &Sent, at: u64, bytes: &[u8]) {
    let file = commitlog_file(root, s.phys / CL_SIZE * CL_SIZE);
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.write_all_at(bytes, s.phys % CL_SIZE + at).unwrap();
}

/// Where the topic bytes start in the record of `s`.
fn topic_at(root: &std::path::Path, s: &Sent) -> u64 {
    let bytes = std::fs::read(commitlog_file(root, s.phys / CL_SIZE * CL_SIZE)).unwrap();
    let start = (s.phys % CL_SIZE) as usize;
    let Decoded::Message(v) = record::decode(&bytes[start..], true) else {
        panic!("no record at {}", s.phys)
    };
    (v.total_size() - 2 - v.properties.len() - v.topic.len()) as u64
}

/// The message at `queue_offset` of `topic`/`queue_id`, read through the
/// engine: (physical offset, QUEUEOFFSET field, topic, body).
fn read_at(
    root: &std::path::Path,
    topic: &str,
    queue_id: i32,
    queue_offset: u64,
) -> (u64, i64, String, Vec<u8>) {
    let store = MessageStore::open(config(root)).expect("the broker starts");
    let r = store.get_messages(topic, queue_id, queue_offset, 1, &AcceptAll);
    let m = r.messages.first().expect("the queue serves the message");
    let Decoded::Message(v) = record::decode(m.as_bytes(), true) else {
        panic!("served record does not decode")
    };
    let out = (
        m.offset(),
        v.queue_offset,
        v.topic.to_string(),
        v.body.to_vec(),
    );
    drop(r);
    store.shutdown().expect("shutdown");
    out
}

/// One repair rewrites the field in place, keeps every derived file, and
/// leaves the store clean with the message served where it was.
fn assert_fixed_in_place(root: &std::path::Path, sent: &[Sent], victim: &Sent, queue_offset: u64) {
    let before = check(root);
    assert_eq!(
        before.count(Kind::HeaderMismatch),
        1,
        "{:#?}",
        before.problems
    );
    let (o, lines) = repair_printing(root, false);
    let after = o.after.expect("repair ran");
    assert!(after.is_clean(), "{:#?}\n{lines:#?}", after.problems);
    assert!(o.unfixable.is_empty());
    assert!(
        lines.iter().all(|l| !l.starts_with("drop ")),
        "nothing is rebuilt: {lines:#?}"
    );
    assert!(lines.iter().any(|l| l.starts_with("rewrite the ")));
    assert!(check(root).is_clean());
    assert_readable(root, sent);
    let (phys, qo, topic, body) = read_at(root, &victim.topic, victim.queue_id, queue_offset);
    assert_eq!(phys, victim.phys);
    assert_eq!(qo, queue_offset as i64);
    assert_eq!(topic, victim.topic);
    assert_eq!(body, victim.body);
}

#[test]
fn damaged_queue_offset_is_rewritten_from_the_consume_queue() {
    let (_d, root, sent) = build(120);
    let victim = nth_in_queue(&sent, "TopicA", 0, 10);
    overwrite(&root, &victim, 20, &3000i64.to_be_bytes());
    // Before repair the queue still serves it, at queue offset 10.
    let (phys, qo, _, _) = read_at(&root, "TopicA", 0, 10);
    assert_eq!((phys, qo), (victim.phys, 3000));
    assert_fixed_in_place(&root, &sent, &victim, 10);
}

#[test]
fn damaged_queue_offset_of_first_and_last_entries() {
    for nth in [0usize, usize::MAX] {
        let (_d, root, sent) = build(120);
        let in_queue = sent
            .iter()
            .filter(|s| s.topic == "TopicB" && s.queue_id == 1)
            .count();
        let nth = nth.min(in_queue - 1);
        let victim = nth_in_queue(&sent, "TopicB", 1, nth);
        overwrite(&root, &victim, 20, &(-7i64).to_be_bytes());
        assert_fixed_in_place(&root, &sent, &victim, nth as u64);
    }
}

#[test]
fn damaged_topic_is_rewritten_when_nothing_else_has_the_damaged_name() {
    let (_d, root, sent) = build(120);
    let victim = nth_in_queue(&sent, "TopicA", 1, 10);
    // "TopicA" -> "TopicC": no such topic anywhere.
    flip_topic_suffix(&root, &victim, 0x02);
    assert_fixed_in_place(&root, &sent, &victim, 10);
    assert!(!root.join("consumequeue/TopicC").exists());
}

#[test]
fn damaged_queue_id_is_rewritten_when_no_queue_has_it() {
    let (_d, root, sent) = build(120);
    let victim = nth_in_queue(&sent, "TopicA", 0, 10);
    overwrite(&root, &victim, 12, &256i32.to_be_bytes());
    assert_fixed_in_place(&root, &sent, &victim, 10);
    assert!(!root.join("consumequeue/TopicA/256").exists());
}

/// The fix comes before any rebuild: with the same queue also damaged (and
/// so dropped and rebuilt from the commit log), the rebuilt queue has the
/// record at its right offset.
#[test]
fn damaged_queue_offset_is_fixed_before_its_queue_is_rebuilt() {
    let (_d, root, sent) = build(120);
    let victim = nth_in_queue(&sent, "TopicA", 0, 10);
    overwrite(&root, &victim, 20, &3000i64.to_be_bytes());
    let cq = root.join("consumequeue/TopicA/0/00000000000000000000");
    let len = std::fs::metadata(&cq).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&cq)
        .unwrap()
        .set_len(len / 2 + 3)
        .unwrap();
    let before = check(&root);
    assert_eq!(before.count(Kind::HeaderMismatch), 1);
    assert_eq!(before.count(Kind::CqFileSize), 1);
    let o = repair_quiet(&root);
    assert!(o.after.unwrap().is_clean());
    assert_readable(&root, &sent);
    let (phys, qo, _, _) = read_at(&root, "TopicA", 0, 10);
    assert_eq!((phys, qo), (victim.phys, 10));
}

/// A flipped topic that names a real topic ("TopicA" -> "TopicB"): fsck
/// cannot tell whether the record or the consume queue is wrong, so repair
/// leaves both (the message stays served by its queue, and does not appear
/// in TopicB's), says so, and still repairs the rest of the store.
#[test]
fn damaged_topic_naming_a_real_topic_is_left_and_reported() {
    let (_d, root, sent) = build(120);
    let victim = nth_in_queue(&sent, "TopicA", 1, 10);
    flip_topic_suffix(&root, &victim, 0x03);
    std::fs::remove_file(root.join("checkpoint")).unwrap();
    let before = check(&root);
    assert_eq!(
        before.count(Kind::HeaderMismatch),
        1,
        "{:#?}",
        before.problems
    );
    for _ in 0..2 {
        let (o, lines) = repair_printing(&root, false);
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("cannot repair: header_mismatch")),
            "{lines:#?}"
        );
        assert!(lines.iter().all(|l| !l.starts_with("drop ")), "{lines:#?}");
        assert_eq!(o.unfixable.len(), 1);
        let after = o.after.unwrap();
        assert_eq!(after.problems.len(), 1, "{:#?}", after.problems);
        assert_eq!(after.problems[0].kind, Kind::HeaderMismatch);
    }
    // Every other message as before; the victim still at TopicA/1 offset 10,
    // and TopicB/1 serves exactly its own messages.
    let (phys, qo, topic, body) = read_at(&root, "TopicA", 1, 10);
    assert_eq!((phys, qo, topic.as_str()), (victim.phys, 10, "TopicB"));
    assert_eq!(body, victim.body);
    let others: Vec<Sent> = sent
        .iter()
        .filter(|s| s.phys != victim.phys)
        .cloned()
        .collect();
    let store = MessageStore::open(config(&root)).unwrap();
    let b1 = sent
        .iter()
        .filter(|s| s.topic == "TopicB" && s.queue_id == 1)
        .count() as u64;
    let r = store.get_messages("TopicB", 1, 0, 64, &AcceptAll);
    assert_eq!(r.max_offset, b1);
    drop(r);
    store.shutdown().unwrap();
    drop(store);
    // assert_readable checks queues by their expected contents; TopicA/1
    // still serves the victim, so leave that queue out.
    let without_a1: Vec<Sent> = others
        .into_iter()
        .filter(|s| !(s.topic == "TopicA" && s.queue_id == 1))
        .collect();
    assert_readable(&root, &without_a1);
}

/// XORs the last letter of the victim's 6-letter topic ("TopicA") with `bits`.
fn flip_topic_suffix(root: &std::path::Path, victim: &Sent, bits: u8) {
    let at = topic_at(root, victim);
    flip(
        &commitlog_file(root, victim.phys / CL_SIZE * CL_SIZE),
        victim.phys % CL_SIZE + at + 5,
        bits,
    );
}

"""Consumer-side interop: orderly, clustering, broadcasting, tag filter,
resume from committed offsets, pull consumer."""

import threading
import time

from rocketmq.client import SendStatus

import remoting
from helpers import (Collector, duplicates, make_message, max_offsets, prepare_topic, unique,
                     wait_bodies, wait_committed, wait_max_offsets_total, wait_until)

QUEUES = 4


def _send_to_each_queue(p, topic, prefix, tags=None):
    """One message per queue through send_orderly's hashing selector (arg % 4)."""
    out = []
    for q in range(QUEUES):
        body = "%s-q%d" % (prefix, q)
        res = p.send_orderly(make_message(topic, body, tags=tags), q)
        assert res.status == SendStatus.OK
        out.append(body)
    return out


def test_orderly(cluster, clients):
    topic = unique("T_order")
    p, _, _ = prepare_topic(clients, cluster, topic)
    keys, per_key = 8, 25
    sent_q = {}
    for seq in range(per_key):
        for k in range(keys):
            res = p.send_orderly(make_message(topic, "%d:%d" % (k, seq), keys="order-%d" % k), k)
            assert res.status == SendStatus.OK, res
    col = Collector()
    clients.push_consumer(cluster.namesrv_addr, unique("CGO"), topic, col.callback_for("o1"), orderly=True)
    expected = ["%d:%d" % (k, s) for k in range(keys) for s in range(per_key)]
    wait_bodies(col, expected, 60)
    by_key = {}
    for r in col.snapshot():
        if r.body == "marker":
            continue
        k, s = map(int, r.body.split(":"))
        by_key.setdefault(k, []).append((s, r.queue_id, r.queue_offset))
    for k, lst in by_key.items():
        seqs = [s for s, _, _ in lst]
        assert seqs == list(range(per_key)), "key %d consumed out of order: %r" % (k, seqs)
        assert len({q for _, q, _ in lst}) == 1, "key %d spread over queues" % k
        offs = [o for _, _, o in lst]
        assert offs == sorted(offs)


def test_clustering_two_consumers_split_queues(cluster, clients):
    topic = unique("T_clu")
    p, _, _ = prepare_topic(clients, cluster, topic)
    group = unique("CGC")
    col = Collector()
    clients.push_consumer(cluster.namesrv_addr, group, topic, col.callback_for("A"))
    clients.push_consumer(cluster.namesrv_addr, group, topic, col.callback_for("B"))

    # Warm up until the group has rebalanced: each queue's warm-up message
    # goes to exactly one consumer, both consumers own queues, and the
    # assignment was the same for two rounds in a row.
    prev, stable, rnd = None, 0, 0
    deadline = time.monotonic() + 90
    while stable < 2:
        assert time.monotonic() < deadline, "group never settled into a stable split: last %r" % prev
        rnd += 1
        bodies = _send_to_each_queue(p, topic, "warm%d" % rnd)
        wait_bodies(col, bodies, 40, what="warm-up round %d" % rnd)
        assign = {}
        for r in col.snapshot():
            if r.body in bodies:
                assign.setdefault(r.queue_id, set()).add(r.consumer)
        ok = all(len(v) == 1 for v in assign.values()) and \
            set().union(*assign.values()) == {"A", "B"}
        stable = stable + 1 if ok and assign == prev else 0
        prev = assign
    mark = len(col.snapshot())

    n = 200
    bodies = ["clu-%03d" % i for i in range(n)]
    for b in bodies:
        assert p.send_sync(make_message(topic, b)).status == SendStatus.OK
    wait_bodies(col, bodies, 60)
    wait_committed(cluster, group, topic)
    main = [r for r in col.snapshot()[mark:] if r.body.startswith("clu-")]
    got = [r.body for r in main]
    assert not duplicates(got), "redelivered in a stable group: %r" % duplicates(got)[:10]
    assert set(got) == set(bodies)
    qa = {r.queue_id for r in main if r.consumer == "A"}
    qb = {r.queue_id for r in main if r.consumer == "B"}
    assert qa and qb, "one consumer got nothing: A=%r B=%r" % (qa, qb)
    assert not (qa & qb), "queues shared by both consumers: A=%r B=%r" % (qa, qb)
    assert len(qa) + len(qb) == QUEUES


def test_broadcasting_each_consumer_gets_all(cluster, clients):
    topic = unique("T_bc")
    p, _, _ = prepare_topic(clients, cluster, topic)
    group = unique("CGB")
    col = Collector()
    clients.push_consumer(cluster.namesrv_addr, group, topic, col.callback_for("A"), broadcasting=True)
    clients.push_consumer(cluster.namesrv_addr, group, topic, col.callback_for("B"), broadcasting=True)
    # A fresh broadcasting consumer starts at the queue's max offset, so warm
    # up until both have received a full round on every queue.
    deadline = time.monotonic() + 90
    rnd = 0
    while True:
        assert time.monotonic() < deadline, "broadcast consumers never both received a full round"
        rnd += 1
        bodies = _send_to_each_queue(p, topic, "warm%d" % rnd)
        try:
            wait_bodies(col, bodies, 8, consumer="A")
            wait_bodies(col, bodies, 8, consumer="B")
            break
        except AssertionError:
            continue
    n = 100
    bodies = ["bc-%03d" % i for i in range(n)]
    for b in bodies:
        assert p.send_sync(make_message(topic, b)).status == SendStatus.OK
    wait_bodies(col, bodies, 60, consumer="A", what="consumer A")
    wait_bodies(col, bodies, 60, consumer="B", what="consumer B")
    for c in "AB":
        got = [b for b in col.bodies(c) if b.startswith("bc-")]
        assert not duplicates(got), "consumer %s got duplicates %r" % (c, duplicates(got)[:5])
        assert sorted(got) == bodies


def test_tag_filter(cluster, clients):
    topic = unique("T_tag")
    p, _, _ = prepare_topic(clients, cluster, topic)
    wanted = []
    for i in range(12):
        for tag in ("TagA", "TagB", "TagC", "TagAB", None):
            body = "%s-%02d" % (tag or "notag", i)
            assert p.send_sync(make_message(topic, body, tags=tag)).status == SendStatus.OK
            if tag in ("TagA", "TagB"):
                wanted.append(body)
    sentinels = _send_to_each_queue(p, topic, "sentinel", tags="TagB")
    group = unique("CGT")
    col = Collector()
    clients.push_consumer(cluster.namesrv_addr, group, topic, col.callback_for("t"),
                          expression="TagA || TagB")
    wait_bodies(col, wanted + sentinels, 60)
    # Every queue ends with a matching sentinel: once the committed offsets
    # reach the ends, nothing else can still be on its way.
    wait_committed(cluster, group, topic)
    got = col.bodies()
    assert not duplicates(got)
    assert set(got) == set(wanted + sentinels), "unexpected: %r" % sorted(set(got) - set(wanted + sentinels))
    assert {r.tags for r in col.snapshot()} == {"TagA", "TagB"}


def _resume_scenario(cluster, clients, restart_broker):
    topic = unique("T_resume")
    p, _, _ = prepare_topic(clients, cluster, topic)
    group = unique("CGR")
    first = ["first-%03d" % i for i in range(60)]
    for b in first:
        assert p.send_sync(make_message(topic, b)).status == SendStatus.OK
    col1 = Collector()
    c1 = clients.push_consumer(cluster.namesrv_addr, group, topic, col1.callback_for("c1"))
    wait_bodies(col1, first, 60)
    committed = wait_committed(cluster, group, topic)
    clients.stop_consumer(c1)
    if restart_broker:
        status, clean = cluster.restart_broker()
        assert clean, "broker did not stop within the bound after SIGTERM"
        after = {q: remoting.query_consumer_offset(cluster.broker_addr, group, topic, q) for q in range(QUEUES)}
        assert after == committed, "committed offsets lost over a clean restart: %r -> %r" % (committed, after)
        p = clients.producer(cluster.namesrv_addr)
    second = ["second-%03d" % i for i in range(60)]
    for b in second:
        assert p.send_sync(make_message(topic, b)).status == SendStatus.OK
    col2 = Collector()
    clients.push_consumer(cluster.namesrv_addr, group, topic, col2.callback_for("c2"))
    wait_bodies(col2, second, 60)
    wait_committed(cluster, group, topic)
    got = col2.bodies()
    redelivered = [b for b in got if not b.startswith("second-")]
    # Offsets were confirmed committed before the first consumer stopped,
    # so the restarted group must not see any earlier message again.
    assert not redelivered, "redelivered after resume: %d, e.g. %r" % (len(redelivered), redelivered[:5])
    assert not duplicates(got)


def test_resume_after_consumer_restart(cluster, clients):
    _resume_scenario(cluster, clients, restart_broker=False)


def test_resume_after_broker_restart(cluster, clients):
    _resume_scenario(cluster, clients, restart_broker=True)


def pull_all(clients, cluster, topic, timeout=60):
    """PullConsumer.pull(topic) reads every queue from offset 0 until
    NO_NEW_MSG. It is a generator that can spin (e.g. on BROKER_TIMEOUT), so
    it runs in a thread we wait for with a deadline."""
    pc = clients.pull_consumer(cluster.namesrv_addr)
    out, err = [], []

    def run():
        try:
            for m in pc.pull(topic):
                out.append((m.queue_id, m.queue_offset, m.body.decode(), (m.keys or b"").decode()))
        except Exception as e:
            err.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "PullConsumer.pull did not finish within %ds (got %d so far)" % (timeout, len(out))
    assert not err, "pull failed: %r" % err
    return out


def test_pull_consumer_reads_queues_from_zero(cluster, clients):
    topic = unique("T_pull")
    p, _, _ = prepare_topic(clients, cluster, topic)
    bodies = ["pull-%03d" % i for i in range(80)]
    for b in bodies:
        assert p.send_sync(make_message(topic, b)).status == SendStatus.OK
    maxo = wait_max_offsets_total(cluster, topic, len(bodies) + 1)
    got = pull_all(clients, cluster, topic)
    assert sorted(b for _, _, b, _ in got) == sorted(bodies + ["marker"])
    per_q = {}
    for q, off, _, _ in got:
        per_q.setdefault(q, []).append(off)
    for q in range(QUEUES):
        assert per_q.get(q, []) == list(range(maxo[q])), "queue %d: offsets %r, max %d" % (q, per_q.get(q), maxo[q])

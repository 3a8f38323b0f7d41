"""Producer-side interop: sync / async / oneway / batch / delay / size limit."""

import re
import threading
import time

import pytest
from rocketmq.client import SendStatus
from rocketmq.exceptions import ProducerSendSyncFailed, RocketMQException

import remoting
from helpers import (Collector, duplicates, make_message, max_offsets, prepare_topic, unique,
                     wait_bodies, wait_max_offsets_total, wait_until)

HEX32 = re.compile(r"^[0-9A-F]{32}$", re.I)


def _consume_all(clients, cluster, topic, expected_bodies, timeout=60, props=("UNIQ_KEY", "seq")):
    col = Collector(props=props)
    clients.push_consumer(cluster.namesrv_addr, unique("CG"), topic, col.callback_for("c1"))
    wait_bodies(col, expected_bodies, timeout)
    return {r.body: r for r in col.snapshot()}, col


def _check_results_against_store(results, got, marker_res):
    """results: body -> SendResult. got: body -> Received."""
    per_queue = {}
    for body, res in results.items():
        r = got[body]
        assert r.props["UNIQ_KEY"] == res.msg_id, (
            "SendResult.msg_id %r is not the stored UNIQ_KEY %r of %r" % (res.msg_id, r.props["UNIQ_KEY"], body))
        assert r.id == res.msg_id, "consumer-side id %r != send msg_id %r" % (r.id, res.msg_id)
        assert r.queue_offset == res.offset, (
            "SendResult.offset %d != stored queue offset %d of %r (queue %d)"
            % (res.offset, r.queue_offset, body, r.queue_id))
        per_queue.setdefault(r.queue_id, []).append(r.queue_offset)
    # marker took one slot somewhere; every queue's offsets must be 0..n-1
    if "marker" in got:
        per_queue.setdefault(got["marker"].queue_id, []).append(got["marker"].queue_offset)
    for q, offs in per_queue.items():
        assert sorted(offs) == list(range(len(offs))), "queue %d offsets not contiguous from 0: %r" % (q, sorted(offs))
    clo = [r.commit_log_offset for r in got.values()]
    assert len(set(clo)) == len(clo), "duplicate commit log offsets among received messages"


def test_sync_send(cluster, clients):
    topic = unique("T_sync")
    p, marker, waited = prepare_topic(clients, cluster, topic)
    assert marker.status == SendStatus.OK
    results = {}
    for i in range(40):
        body = "sync-%03d" % i
        res = p.send_sync(make_message(topic, body, tags="TagA", keys="key-%d" % i, props={"seq": str(i)}))
        assert res.status == SendStatus.OK, res
        assert HEX32.match(res.msg_id), "msg_id should be the client's 32-hex UNIQ_KEY, got %r" % res.msg_id
        assert res.offset >= 0
        results[body] = res
    assert len({r.msg_id for r in results.values()}) == 40
    wait_max_offsets_total(cluster, topic, 41)

    got, col = _consume_all(clients, cluster, topic, results)
    for i in range(40):
        r = got["sync-%03d" % i]
        assert r.topic == topic
        assert r.tags == "TagA"
        assert r.keys == "key-%d" % i
        assert r.props["seq"] == str(i)
        assert r.reconsume_times == 0
        assert r.store_timestamp >= r.born_timestamp - 5000
    _check_results_against_store(results, got, marker)
    assert not duplicates(col.bodies()), "duplicates delivered: %r" % duplicates(col.bodies())


def test_async_send(cluster, clients):
    topic = unique("T_async")
    p, _, _ = prepare_topic(clients, cluster, topic)
    lock = threading.Lock()
    ok, failed = {}, []

    def on_ok_for(body):
        def on_ok(res):
            with lock:
                ok[body] = res
        return on_ok

    def on_err(exc):
        with lock:
            failed.append(str(exc))

    n = 40
    for i in range(n):
        body = "async-%03d" % i
        p.send_async(make_message(topic, body, keys="akey-%d" % i), on_ok_for(body), on_err)
    wait_until(lambda: len(ok) + len(failed) >= n, 30,
               lambda: "async send callbacks (%d ok, %d failed of %d)" % (len(ok), len(failed), n))
    assert not failed, "async sends failed: %r" % failed[:3]
    for res in ok.values():
        assert res.status == SendStatus.OK
        assert HEX32.match(res.msg_id)
    got, col = _consume_all(clients, cluster, topic, ok)
    _check_results_against_store(ok, got, None)


def test_oneway_send(cluster, clients):
    topic = unique("T_oneway")
    p, _, _ = prepare_topic(clients, cluster, topic)
    bodies = ["oneway-%03d" % i for i in range(40)]
    for b in bodies:
        p.send_oneway(make_message(topic, b, tags="TagO"))
    got, col = _consume_all(clients, cluster, topic, bodies)
    assert not duplicates(col.bodies())
    for b in bodies:
        assert got[b].tags == "TagO"


def test_batch_send(cluster, clients):
    """send_batch(): the C++ 1.2.x core sends SEND_MESSAGE (10) with
    batch="1" and a §8.3 batch body. We expect the broker to unpack it into
    separate messages with consecutive offsets in one queue (the client's
    intent; a Java 4.x broker would store one blob because it parses "1" as
    false)."""
    topic = unique("T_batch")
    p, _, _ = prepare_topic(clients, cluster, topic)
    msgs = [make_message(topic, "batch-%02d" % i, tags="TagB", keys="bkey-%d" % i) for i in range(10)]
    res = p.send_batch(msgs)
    assert res.status == SendStatus.OK, res
    # Finding: the C++ 1.2.x client reports the batch wrapper's UNIQ_KEY as
    # msg_id, and the wrapper has none (only members do), so msg_id is "".
    print("batch SendResult: %r" % (res,))
    bodies = ["batch-%02d" % i for i in range(10)]
    got, col = _consume_all(clients, cluster, topic, bodies, timeout=45)
    qs = {got[b].queue_id for b in bodies}
    assert len(qs) == 1, "batch members landed in several queues: %r" % qs
    offs = [got[b].queue_offset for b in bodies]
    assert offs == list(range(res.offset, res.offset + 10)), (
        "batch offsets %r, SendResult.offset %d" % (offs, res.offset))
    for i, b in enumerate(bodies):
        assert got[b].keys == "bkey-%d" % i and got[b].tags == "TagB"
        assert HEX32.match(got[b].props["UNIQ_KEY"] or ""), got[b].props
        assert got[b].id == got[b].props["UNIQ_KEY"]
    assert len({got[b].props["UNIQ_KEY"] for b in bodies}) == 10, "batch members share a UNIQ_KEY"


def test_delay_level(cluster, clients):
    """Message.set_delay_time_level(1) = 1 s: delivered no earlier than ~1 s
    after sending, after an undelayed message sent later."""
    topic = unique("T_delay")
    p, _, _ = prepare_topic(clients, cluster, topic)
    col = Collector()
    clients.push_consumer(cluster.namesrv_addr, unique("CG"), topic, col.callback_for("c1"))
    # consumer is live once it got the marker (a new group starts at offset 0)
    wait_bodies(col, ["marker"], 40, what="marker")
    t0 = time.time()
    res = p.send_sync(make_message(topic, "delayed", delay_level=1))
    assert res.status == SendStatus.OK
    p.send_sync(make_message(topic, "immediate"))
    wait_bodies(col, ["delayed", "immediate"], 60)
    got = {r.body: r for r in col.snapshot()}
    assert got["delayed"].recv_time - t0 >= 0.9, "delayed message arrived after %.2fs" % (got["delayed"].recv_time - t0)
    assert got["immediate"].recv_time <= got["delayed"].recv_time


def test_message_over_max_size_refused(cluster_factory, clients):
    """Broker started with maxMessageSize=1024; a 2000-byte body must be
    refused. Finding: the C++ 1.2.x client retries the send on other queues
    (3 attempts) and then raises a generic "No route info of this topic"
    error, dropping the broker's remark, so the *clear error* is checked at the
    protocol level (our remoting probe sends the same SEND_MESSAGE)."""
    c = cluster_factory(maxMessageSize=1024)
    topic = unique("T_big")
    p, _, _ = prepare_topic(clients, c, topic)
    big = "B" * 2000  # < 4096: the client does not compress it
    t0 = time.monotonic()
    with pytest.raises(RocketMQException) as ei:
        p.send_sync(make_message(topic, big))
    took = time.monotonic() - t0
    print("C++ client: over-size send refused after %.2fs: %s" % (took, ei.value))
    assert took < 20, "refusal took %.1fs" % took
    assert c.broker.alive(), "broker died on an over-size message"

    r = remoting.send_message(c.broker_addr, topic, big, properties="WAIT\x01true\x02")
    print("broker answer to the same request: %r" % (r,))
    assert r.code == 13, "expected MESSAGE_ILLEGAL (13), got %r" % (r,)
    assert r.remark and re.search(r"size|exceed|large|limit|illegal", r.remark, re.I), "unclear remark %r" % r.remark

    # broker carries on
    ok = p.send_sync(make_message(topic, "small-after-big"))
    assert ok.status == SendStatus.OK
    wait_max_offsets_total(c, topic, 2)  # marker + small: the refused ones were not stored
    got, col = _consume_all(clients, c, topic, ["small-after-big"])
    assert big not in got

"""kill -9 under load with flushDiskType=SYNC_FLUSH: every acknowledged
message must survive."""

import threading
import time

import pytest
from rocketmq.client import SendStatus

import remoting
from helpers import make_message, max_offsets, prepare_topic, unique, wait_until
from test_consume import pull_all


@pytest.mark.timeout(300)
def test_kill9_under_load_sync_flush(cluster_factory, clients):
    c = cluster_factory(flushDiskType="SYNC_FLUSH")
    topic = unique("T_k9")
    p, _, _ = prepare_topic(clients, c, topic)
    # One producer per sender thread. The C++ 1.2.x client guards its
    # broker connection table with a std::timed_mutex whose try_lock_for
    # gives up at once instead of waiting its 3 s, so two threads sending
    # through one producer at the same moment make one of them fail every
    # retry ("GetTransport ... get timed_mutex timeout" in its log) and
    # report "No route info of this topic" without reaching the broker.
    # Separate producers have separate connection tables.
    producers = [p] + [clients.producer(c.namesrv_addr, timeout_ms=3000) for _ in range(3)]
    for i, prod in enumerate(producers[1:]):
        assert prod.send_sync(make_message(topic, "warm-%d" % i)).status == SendStatus.OK
    lock = threading.Lock()
    acked, not_ok, errors_before, errors_after = {}, [], [], []
    killed = threading.Event()
    stop = threading.Event()

    def sender(tid, prod):
        i = 0
        while not stop.is_set():
            body = "k9-%d-%06d" % (tid, i)
            i += 1
            try:
                res = prod.send_sync(make_message(topic, body, keys=body))
            except Exception as e:
                with lock:
                    (errors_after if killed.is_set() else errors_before).append(
                        "%.3f t%d acked=%d %s" % (time.monotonic(), tid, len(acked), e))
                if killed.is_set():
                    return
                continue
            with lock:
                if res.status == SendStatus.OK:
                    acked[body] = res
                else:
                    not_ok.append((body, res.status))

    threads = [threading.Thread(target=sender, args=(t, producers[t]), daemon=True) for t in range(4)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(acked) >= 1500, 90, lambda: "1500 acknowledged sends (have %d)" % len(acked))
    finally:
        killed.set()
        c.kill9_broker()
    t_kill = time.monotonic()
    print("kill at %.3f" % t_kill)
    for t in threads:
        t.join(max(1, 60 - (time.monotonic() - t_kill)))
    stop.set()
    assert not any(t.is_alive() for t in threads), "sender threads still blocked 60s after kill -9"
    # A producer's own heartbeat timer can still take its connection table
    # at the moment a send does (see above); such a send fails unsent as
    # "No route info of this topic". It was never acknowledged, so the
    # durability claim below is unaffected; any other failure before the
    # kill, or more than a few of these, fails the test.
    route_races = [e for e in errors_before if "No route info of this topic" in e]
    others = [e for e in errors_before if e not in route_races]
    assert not others, "sends failed before the kill: %d, e.g. %r" % (len(others), others[:3])
    assert len(route_races) <= 5, \
        "too many unsent 'No route info' failures before the kill: %d, e.g. %r" % (len(route_races), route_races[:3])
    if route_races:
        print("C++ client connection-table race before the kill: %d unacknowledged sends failed" % len(route_races))
    print("acked %d before kill -9 (plus %d non-OK statuses); %d sends failed after it"
          % (len(acked), len(not_ok), len(errors_after)))

    c.start_broker()
    print("broker restarted in %.2fs" % c.broker_ready_seconds)
    maxo = {}

    def enough():
        maxo.update(max_offsets(c, topic))
        return sum(maxo.values()) >= len(acked) + 1

    wait_until(enough, 20, lambda: "queues to hold the %d acknowledged messages (max offsets %r)" % (len(acked), maxo))
    got = pull_all(clients, c, topic, timeout=90)
    bodies = [b for _, _, b, _ in got]
    missing = set(acked) - set(bodies)
    assert not missing, "%d acknowledged messages lost, e.g. %r" % (len(missing), sorted(missing)[:5])
    for _, _, b, k in got:
        if b.startswith("k9-"):
            assert k == b, "key/body mismatch after recovery: %r vs %r" % (k, b)
    # queue offsets of acknowledged messages are what the broker told us
    where = {b: (q, o) for q, o, b, _ in got}
    wrong = [(b, r.offset, where[b]) for b, r in acked.items() if where[b][1] != r.offset]
    assert not wrong, "acknowledged offsets changed across the crash: %r" % wrong[:5]
    # and the broker carries on
    assert p.send_sync(make_message(topic, "after-restart")).status == SendStatus.OK

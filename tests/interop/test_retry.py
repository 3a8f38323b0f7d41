"""Consumer retry through the C++ push consumer.

A callback that answers RECONSUME_LATER makes the client send the message
back (CONSUMER_SEND_MSG_BACK, delayLevel 0); the broker stores it in
SCHEDULE_TOPIC_XXXX at level 3 + reconsume times with REAL_TOPIC
%RETRY%<group>, delivers it there when due, and the consumer (subscribed to
its retry topic by the client itself) gets it again with reconsumeTimes + 1.
Past maxReconsumeTimes the message goes to %DLQ%<group> instead.

Client facts that shape the test: the C++ client (1.0.x in this package)
hands the callback a whole pulled batch and, when one message of it fails,
sends back every message of the batch, so only one message at a time is in
the retry topic here; it starts pulling its retry topic only at a rebalance,
so the first retry may come later than its delay level says; and it sends
back to the message's store host, so retries must carry the broker's own
address."""

import threading
import time

from helpers import _s, make_message, prepare_topic, unique, wait_until
from rocketmq.client import SendStatus
import remoting

# Every level 1 s, so retries come back quickly.
FAST_LEVELS = " ".join(["1s"] * 18)


def test_reconsume_later_redelivers_with_growing_reconsume_times(cluster_factory, clients):
    c = cluster_factory(messageDelayLevel=FAST_LEVELS)
    topic = unique("T_retry")
    p, _, _ = prepare_topic(clients, c, topic)
    fail_times = {"R-a": 2, "R-c": 0}
    for body in fail_times:
        assert p.send_sync(make_message(topic, body, keys=body)).status == SendStatus.OK

    lock = threading.Lock()
    deliveries = []  # (body, reconsume_times, topic, monotonic time)

    def consume(msg):
        body = _s(msg.body)
        if body not in fail_times:
            return True  # prepare_topic's marker
        t = _s(msg.topic)
        with lock:
            seen_before = sum(1 for b, _, _, _ in deliveries if b == body)
            deliveries.append((body, msg.reconsume_times, t, time.monotonic()))
        return seen_before >= fail_times[body]

    group = unique("CG_retry")
    clients.push_consumer(c.namesrv_addr, group, topic, consume, batch_max=1,
                          returns_status=True)
    expected = sum(n + 1 for n in fail_times.values())

    def done():
        with lock:
            return len(deliveries) >= expected

    wait_until(done, 90, lambda: "retries (have %r)" % deliveries)
    # Room for an extra, unwanted redelivery to show up.
    time.sleep(3)
    with lock:
        final = list(deliveries)
    for body, fails in fail_times.items():
        got = [(r, t, when) for b, r, t, when in final if b == body]
        assert [r for r, _, _ in got] == list(range(fails + 1)), "%s: %r" % (body, got)
        # Retries come through the group's retry topic; the client restores
        # the original topic name (RETRY_TOPIC) before the callback.
        assert all(t == topic for _, t, _ in got), got
        for (_, _, earlier), (_, _, later) in zip(got, got[1:]):
            assert later - earlier >= 0.8, "%s redelivered after %.2f s, before its 1 s delay" % (
                body, later - earlier)
    assert len(final) == expected, final
    # Every retry went through the group's retry topic (one queue) on the broker.
    stored = remoting.get_max_offset(c.broker_addr, "%RETRY%" + group, 0)
    assert stored == sum(fail_times.values()), stored


def test_message_past_max_reconsume_times_goes_to_the_dlq(cluster_factory, clients):
    # maxReconsumeTimes is the group's retryMaxTimes (16) for a 1.x C++
    # client, which sends no maxReconsumeTimes header; a group config with
    # retryMaxTimes=1 makes the second failure final.
    c = cluster_factory(messageDelayLevel=FAST_LEVELS)
    topic = unique("T_dlq")
    p, _, _ = prepare_topic(clients, c, topic)
    group = unique("CG_dlq")
    remoting.update_subscription_group(c.broker_addr, group, retry_max_times=1)
    assert p.send_sync(make_message(topic, "D-1", keys="D-1")).status == SendStatus.OK

    lock = threading.Lock()
    deliveries = []

    def consume(msg):
        if _s(msg.body) == "D-1":
            with lock:
                deliveries.append(msg.reconsume_times)
            return False  # always fails
        return True

    clients.push_consumer(c.namesrv_addr, group, topic, consume, batch_max=1,
                          returns_status=True)
    dlq = "%DLQ%" + group
    wait_until(lambda: remoting.get_max_offset(c.broker_addr, dlq, 0, missing=0) >= 1, 90,
               lambda: "the DLQ (deliveries %r)" % deliveries)
    time.sleep(2)
    with lock:
        assert deliveries == [0, 1], deliveries
    assert remoting.get_max_offset(c.broker_addr, dlq, 0) == 1

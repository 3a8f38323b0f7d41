"""Helpers around the rocketmq 0.4.4 Python API (C++ core 1.2.x).

Notes on the client that shape these helpers:
* The C++ core keys its client factory by clientId = ip@instanceName. Two
  clients in one process with the same instance name share one factory (and
  the name server address of whoever created it first), and two push
  consumers of one group would look like ONE consumer to the broker. So every
  producer/consumer here gets a unique instance name. The Python Producer has
  no set_instance_name; we call the exported C function
  SetProducerInstanceName through rocketmq.ffi.dll.
* RecvMessage wraps a C pointer valid only during the callback: copy fields out.
* Bodies go through c_char_p: no NUL bytes in bodies (we use ASCII).
"""

import itertools
import os
import threading
import time
import traceback
import uuid

from rocketmq.client import Message, Producer, PushConsumer, PullConsumer, RecvMessage
from rocketmq.exceptions import ffi_check
from rocketmq.ffi import MessageModel, dll

_counter = itertools.count(1)


def unique(prefix):
    return "%s_%d_%d_%s" % (prefix, os.getpid(), next(_counter), uuid.uuid4().hex[:6])


def wait_until(pred, timeout, what, interval=0.05):
    """Poll pred() until truthy or timeout seconds pass; AssertionError with
    `what` (a string or a callable returning one) on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            msg = what() if callable(what) else what
            raise AssertionError("timed out after %.0fs waiting for %s" % (timeout, msg))
        time.sleep(interval)


def _s(v):
    if v is None:
        return None
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v


def make_message(topic, body, tags=None, keys=None, props=None, delay_level=None):
    m = Message(topic)
    m.set_body(body)
    if tags is not None:
        m.set_tags(tags)
    if keys is not None:
        m.set_keys(keys)
    for k, v in (props or {}).items():
        m.set_property(k, v)
    if delay_level is not None:
        m.set_delay_time_level(delay_level)
    return m


class Received(object):
    __slots__ = ("consumer", "topic", "tags", "keys", "body", "id", "queue_id", "queue_offset",
                 "commit_log_offset", "reconsume_times", "store_timestamp", "born_timestamp",
                 "delay_time_level", "props", "recv_time", "thread")

    def __repr__(self):
        return "<Received %s q%s@%s tags=%r keys=%r body=%r>" % (
            self.consumer, self.queue_id, self.queue_offset, self.tags, self.keys, self.body[:40])


class Collector(object):
    """Thread-safe sink for messages received by one or more consumers."""

    def __init__(self, props=()):
        self.lock = threading.Lock()
        self.items = []
        self.props = tuple(props)

    def callback_for(self, consumer_name):
        def cb(msg):
            r = Received()
            r.consumer = consumer_name
            r.topic = _s(msg.topic)
            r.tags = _s(msg.tags)
            r.keys = _s(msg.keys)
            r.body = _s(msg.body)
            r.id = _s(msg.id)
            r.queue_id = msg.queue_id
            r.queue_offset = msg.queue_offset
            r.commit_log_offset = msg.commit_log_offset
            r.reconsume_times = msg.reconsume_times
            r.store_timestamp = msg.store_timestamp
            r.born_timestamp = msg.born_timestamp
            r.delay_time_level = msg.delay_time_level
            r.props = {p: _s(msg.get_property(p)) for p in self.props}
            r.recv_time = time.time()
            r.thread = threading.get_ident()
            with self.lock:
                self.items.append(r)
        return cb

    def snapshot(self):
        with self.lock:
            return list(self.items)

    def bodies(self, consumer=None):
        return [r.body for r in self.snapshot() if consumer is None or r.consumer == consumer]

    def count(self, pred=None):
        with self.lock:
            return sum(1 for r in self.items if pred is None or pred(r))


class ClientRegistry(object):
    """Creates C++ clients with unique names and shuts them all down."""

    def __init__(self):
        self.producers = []
        self.consumers = []

    def producer(self, namesrv_addr, group=None, timeout_ms=5000, max_message_size=None, start=True):
        group = group or unique("PG")
        p = Producer(group, timeout=timeout_ms, max_message_size=max_message_size)
        dll.SetProducerInstanceName(p._handle, unique("prod").encode())
        p.set_namesrv_addr(namesrv_addr)
        if start:
            p.start()
        self.producers.append(p)
        return p

    def push_consumer(self, namesrv_addr, group, topic, callback, expression="*", orderly=False,
                      broadcasting=False, instance=None, threads=None, start=True,
                      batch_max=None, returns_status=False):
        """returns_status: callback(msg) returns True (CONSUME_SUCCESS) or
        False (RECONSUME_LATER). Needed because the Python wrapper's way of
        asking for RECONSUME_LATER, raising from the callback, re-raises the
        exception inside its ctypes callback, so the C++ client gets
        whatever value ctypes leaves there instead of RECONSUME_LATER."""
        model = MessageModel.BROADCASTING if broadcasting else MessageModel.CLUSTERING
        c = PushConsumer(group, orderly=orderly, message_model=model)
        c.set_instance_name(instance or unique("cons"))
        c.set_namesrv_addr(namesrv_addr)
        if threads:
            c.set_thread_count(threads)
        if batch_max:
            c.set_message_batch_max_size(batch_max)
        if returns_status:
            def raw(_consumer, msg):
                try:
                    ok = callback(RecvMessage(msg))
                except Exception:  # a test bug: report it, ask for a retry
                    traceback.print_exc()
                    ok = False
                return 0 if ok else 1  # CONSUME_SUCCESS / RECONSUME_LATER
            ffi_check(dll.Subscribe(c._handle, topic.encode(), expression.encode()))
            c._register_callback(raw)
        else:
            c.subscribe(topic, callback, expression)
        c._it_stopped = False
        if start:
            c.start()
        self.consumers.append(c)
        return c

    def stop_consumer(self, c):
        if not getattr(c, "_it_stopped", False):
            c._it_stopped = True
            c.shutdown()

    def pull_consumer(self, namesrv_addr, group=None):
        c = PullConsumer(group or unique("PULLG"))
        # PullConsumer.offset_table is a CLASS attribute in 0.4.4 (shared by all
        # instances, keyed topic@queueId): give each instance its own.
        c.offset_table = {}
        c.set_namesrv_addr(namesrv_addr)
        c.start()
        self.consumers.append(c)
        c._it_stopped = False
        return c

    def shutdown_all(self):
        errors = []
        for c in reversed(self.consumers):
            try:
                self.stop_consumer(c)
            except Exception as e:
                errors.append(e)
        for p in reversed(self.producers):
            if not getattr(p, "_it_stopped", False):
                p._it_stopped = True
                try:
                    p.shutdown()
                except Exception as e:
                    errors.append(e)
        # Keep the Python objects alive until process exit: their __del__
        # calls shutdown()+Destroy*() again, which we don't want mid-run.
        _graveyard.extend(self.consumers + self.producers)
        self.consumers, self.producers = [], []
        if errors:
            print("client shutdown errors: %r" % errors)


_graveyard = []


def prepare_topic(clients, cluster, topic, producer=None, queues=4):
    """Create `topic` by sending one marker message (auto-creation from
    TBW102), then wait for its route to appear on the name server so that
    consumers started afterwards see its queues at once (the C++ client only
    refreshes routes every 30 s). Returns (producer, marker SendResult, seconds)."""
    import remoting
    p = producer or clients.producer(cluster.namesrv_addr)
    res = p.send_sync(make_message(topic, "marker", tags="marker", keys="marker"))
    route, waited = remoting.wait_for_route(cluster.namesrv_addr, topic, deadline_s=40,
                                            min_write_queues=queues)
    return p, res, waited


def max_offsets(cluster, topic, queues=4):
    import remoting
    return {q: remoting.get_max_offset(cluster.broker_addr, topic, q) for q in range(queues)}


def wait_committed(cluster, group, topic, targets=None, queues=4, timeout=40):
    """Wait until the broker's committed offset of (group, topic, q) reaches
    targets[q] (default: the queue's max offset now) for every queue."""
    import remoting
    if targets is None:
        targets = max_offsets(cluster, topic, queues)
    state = {}

    def done():
        for q, t in targets.items():
            state[q] = remoting.query_consumer_offset(cluster.broker_addr, group, topic, q)
            if state[q] is None or state[q] < t:
                return False
        return True

    wait_until(done, timeout, lambda: "committed offsets of %s on %s to reach %r (broker says %r)"
               % (group, topic, targets, state), interval=0.25)
    return dict(state)


def wait_bodies(collector, expected, timeout, consumer=None, what="messages"):
    """Wait until every body in `expected` was received (by `consumer`, or by anyone)."""
    expected = set(expected)

    def missing():
        return expected - set(collector.bodies(consumer))

    wait_until(lambda: not missing(), timeout,
               lambda: "%s: %d of %d still missing, e.g. %r (received %d in total)"
               % (what, len(missing()), len(expected), sorted(missing())[:5], collector.count()))


def duplicates(items):
    seen, dups = set(), []
    for x in items:
        if x in seen:
            dups.append(x)
        seen.add(x)
    return dups


def wait_max_offsets_total(cluster, topic, expected, queues=4, timeout=10):
    """The consume queues are filled asynchronously after the append (as in
    Java's reput service): wait, bounded, for the sum of the queues' max
    offsets to reach `expected`, and return the per-queue dict."""
    state = {}

    def ok():
        state.clear()
        state.update(max_offsets(cluster, topic, queues))
        return sum(state.values()) >= expected

    try:
        wait_until(ok, timeout, "", interval=0.1)
    except AssertionError:
        pass
    assert sum(state.values()) == expected, (
        "broker max offsets %r add up to %d, expected %d (after waiting up to %ds)"
        % (state, sum(state.values()), expected, timeout))
    return dict(state)

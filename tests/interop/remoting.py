"""A tiny RocketMQ remoting client (JSON serialization) used by the tests as
an *independent observer* of the name server and broker: it lets a test wait
for a route to appear or for a committed consumer offset to reach a value,
with a deadline, instead of sleeping.

Only request codes a 4.x broker/namesrv must implement are used:
  105 GET_ROUTEINFO_BY_TOPIC (namesrv), 14 QUERY_CONSUMER_OFFSET,
  30 GET_MAX_OFFSET, 31 GET_MIN_OFFSET (broker).
"""

import json
import re
import socket
import struct
import threading
import time

_opaque_lock = threading.Lock()
_opaque = [0]


def _next_opaque():
    with _opaque_lock:
        _opaque[0] += 1
        return _opaque[0]


class RemotingError(Exception):
    pass


class Response(object):
    def __init__(self, header, body):
        self.header = header
        self.body = body
        self.code = header.get("code")
        self.remark = header.get("remark")
        self.ext = header.get("extFields") or {}

    def __repr__(self):
        return "<Response code=%r remark=%r ext=%r body=%d bytes>" % (
            self.code, self.remark, self.ext, len(self.body or b""))


def _recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise RemotingError("connection closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return buf


def invoke(addr, code, ext=None, body=b"", timeout=5.0):
    """Send one request (JSON header) and return the Response.

    addr is "host:port". Raises RemotingError / OSError on failure.
    """
    host, port = addr.rsplit(":", 1)
    opaque = _next_opaque()
    header = {
        "code": code,
        "language": "JAVA",
        "version": 399,
        "opaque": opaque,
        "flag": 0,
        "remark": "",
        "extFields": {k: str(v) for k, v in (ext or {}).items()},
        "serializeTypeCurrentRPC": "JSON",
    }
    hdr = json.dumps(header).encode("utf-8")
    frame = struct.pack(">ii", 4 + len(hdr) + len(body), len(hdr)) + hdr + body
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(frame)
        while True:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            (total,) = struct.unpack(">i", _recv_exact(s, 4))
            (hword,) = struct.unpack(">i", _recv_exact(s, 4))
            rest = _recv_exact(s, total - 4)
            serial = (hword >> 24) & 0xFF
            hlen = hword & 0xFFFFFF
            if serial != 0:
                raise RemotingError("response in serialization type %d (expected JSON 0)" % serial)
            rh = json.loads(rest[:hlen].decode("utf-8"))
            rb = rest[hlen:]
            if rh.get("opaque") == opaque and (rh.get("flag", 0) & 1):
                return Response(rh, rb)
            # A request from the server or an unrelated frame: ignore it.


def lenient_json(body):
    """Parse fastjson-style JSON that may have unquoted integer keys."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    text = re.sub(r'([{,])\s*(-?\d+)\s*:', r'\1"\2":', text)
    return json.loads(text)


def get_route(namesrv_addr, topic, timeout=3.0):
    """Route data dict for topic, or None when the name server has none."""
    r = invoke(namesrv_addr, 105, {"topic": topic}, timeout=timeout)
    if r.code != 0 or not r.body:
        return None
    return lenient_json(r.body)


def wait_for_route(namesrv_addr, topic, deadline_s=40.0, min_write_queues=1):
    """Wait (bounded) until the name server returns a route for topic with at
    least one broker address and min_write_queues writable queues in total.
    Returns (route, seconds_waited)."""
    t0 = time.monotonic()
    last = None
    while time.monotonic() - t0 < deadline_s:
        try:
            route = get_route(namesrv_addr, topic)
            last = route
            if route:
                qds = route.get("queueDatas") or []
                bds = route.get("brokerDatas") or []
                wq = sum(int(q.get("writeQueueNums", 0)) for q in qds)
                has_addr = any((b.get("brokerAddrs") or {}) for b in bds)
                if wq >= min_write_queues and has_addr:
                    return route, time.monotonic() - t0
        except (OSError, RemotingError, ValueError) as e:
            last = e
        time.sleep(0.2)
    raise AssertionError("no route for topic %r from name server %s within %.0fs (last answer: %r)"
                         % (topic, namesrv_addr, deadline_s, last))


def query_consumer_offset(broker_addr, group, topic, queue_id):
    """Committed offset, or None if the broker has none (code 22)."""
    r = invoke(broker_addr, 14, {"consumerGroup": group, "topic": topic, "queueId": queue_id})
    if r.code == 0:
        return int(r.ext.get("offset", -1))
    return None


def get_max_offset(broker_addr, topic, queue_id, missing=None):
    """GET_MAX_OFFSET; with `missing` given, an error answer returns it
    (a topic that does not exist yet) instead of raising."""
    r = invoke(broker_addr, 30, {"topic": topic, "queueId": queue_id})
    if r.code != 0:
        if missing is not None:
            return missing
        raise RemotingError("GET_MAX_OFFSET failed: %r" % (r,))
    return int(r.ext.get("offset"))


def update_subscription_group(broker_addr, group, retry_max_times=16, retry_queue_nums=1):
    """UPDATE_AND_CREATE_SUBSCRIPTIONGROUP (200) with RocketMQ's defaults
    except the retry settings."""
    body = json.dumps({
        "groupName": group, "consumeEnable": True, "consumeFromMinEnable": True,
        "consumeBroadcastEnable": True, "retryQueueNums": retry_queue_nums,
        "retryMaxTimes": retry_max_times, "brokerId": 0, "whichBrokerWhenConsumeSlowly": 1,
        "notifyConsumerIdsChangedEnable": True,
    }).encode("utf-8")
    r = invoke(broker_addr, 200, body=body)
    if r.code != 0:
        raise RemotingError("UPDATE_AND_CREATE_SUBSCRIPTIONGROUP failed: %r" % (r,))


def get_min_offset(broker_addr, topic, queue_id):
    r = invoke(broker_addr, 31, {"topic": topic, "queueId": queue_id})
    if r.code != 0:
        raise RemotingError("GET_MIN_OFFSET failed: %r" % (r,))
    return int(r.ext.get("offset"))


def send_message(broker_addr, topic, body, properties="", queue_id=0, producer_group="PG_remoting_probe"):
    """SEND_MESSAGE (10) shaped like the C++ 1.2.x client's request."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    ext = {
        "producerGroup": producer_group, "topic": topic, "defaultTopic": "TBW102",
        "defaultTopicQueueNums": 4, "queueId": queue_id, "sysFlag": 0,
        "bornTimestamp": str(int(time.time() * 1000)), "flag": 0, "properties": properties,
        "reconsumeTimes": "0", "unitMode": "0", "batch": "0",
    }
    return invoke(broker_addr, 10, ext, body=body)

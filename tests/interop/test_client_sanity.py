"""Checks that need no broker: the bundled librocketmq loads, and a producer
whose name server is unreachable fails fast with a clear error (so no test
can hang on a dead cluster)."""

import socket
import time

import pytest
from rocketmq.exceptions import RocketMQException

from helpers import make_message, unique


def test_librocketmq_loads():
    from rocketmq import ffi
    assert ffi.dll.CreateMessage is not None


def test_unreachable_namesrv_fails_fast(clients):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    p = clients.producer("127.0.0.1:%d" % port, timeout_ms=3000)
    t0 = time.monotonic()
    with pytest.raises(RocketMQException) as ei:
        p.send_sync(make_message(unique("T_nowhere"), "x"))
    assert time.monotonic() - t0 < 15
    assert "route" in str(ei.value).lower(), str(ei.value)

"""Cluster layouts with the C++ client: conf/2m-noslave (two masters) behind
two name servers, the client given both as `a;b` (cluster.md §1-2).

The brokers run from the layout's own .properties files; only listenPort and
storePathRootDir (and namesrvAddr, to the run-time name servers) are
overridden on the command line.
"""

import os

import pytest
from rocketmq.client import SendStatus

import remoting
from conftest import REPO, LISTEN_RE, ManagedProcess, _binary, pick_broker_port
from helpers import Collector, make_message, unique, wait_bodies, wait_until

QUEUES = 4


class Layout(object):
    """Name servers and brokers of one conf/<layout>; all stopped at teardown."""

    def __init__(self, workdir, layout):
        self.workdir = str(workdir)
        self.layout = layout
        self.procs = []
        self.namesrvs = []
        self.brokers = {}

    def start_namesrv(self, name):
        argv = [_binary("rmq-namesrv"), "listenPort=0", "listenAddr=127.0.0.1",
                "kvConfigPath=%s" % os.path.join(self.workdir, name, "kv.json")]
        p = ManagedProcess(name, argv, os.path.join(self.workdir, name + ".log"), cwd=self.workdir)
        self.procs.append(p)
        out = p.start(["listening on 127.0.0.1:"])
        addr = "127.0.0.1:%s" % LISTEN_RE.search(out).group(1)
        self.namesrvs.append((p, addr))
        return addr

    def namesrv_addr(self):
        return ";".join(a for _, a in self.namesrvs)

    def start_broker(self, name):
        port = pick_broker_port()
        conf = os.path.join(REPO, "conf", self.layout, name + ".properties")
        argv = [_binary("rmq-broker"), "-c", conf, "-n", self.namesrv_addr(),
                "listenPort=%d" % port,
                "storePathRootDir=%s" % os.path.join(self.workdir, name),
                "mappedFileSizeCommitLog=%d" % (64 * 1024 * 1024)]
        p = ManagedProcess(name, argv, os.path.join(self.workdir, name + ".log"), cwd=self.workdir)
        self.procs.append(p)
        p.start(["rmq-broker ready", "listening on 127.0.0.1:%d" % port])
        self.brokers[name] = (p, "127.0.0.1:%d" % port)
        return "127.0.0.1:%d" % port

    def stop(self):
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception as e:  # never hide the test's own failure
                print("stopping %s: %r" % (p.name, e))

    def logs(self):
        return [("%s log (%s)" % (p.name, p.log_path), p.tail()) for p in self.procs]


@pytest.fixture
def noslave(request, tmp_path):
    lay = Layout(tmp_path, "2m-noslave")
    request.node._rmq_clusters = [lay]  # conftest attaches logs on failure
    try:
        lay.start_namesrv("namesrv-1")
        lay.start_namesrv("namesrv-2")
        lay.start_broker("broker-a")
        lay.start_broker("broker-b")
        yield lay
    finally:
        lay.stop()


def _create_topic(broker_addr, topic):
    r = remoting.invoke(broker_addr, 17, {
        "topic": topic, "defaultTopic": "TBW102", "readQueueNums": QUEUES,
        "writeQueueNums": QUEUES, "perm": 6, "topicFilterType": "SINGLE_TAG",
        "topicSysFlag": 0, "order": "false"})
    assert r.code == 0, r


def _route_brokers(namesrv, topic):
    route = remoting.get_route(namesrv, topic) or {}
    return sorted(q["brokerName"] for q in route.get("queueDatas") or [])


def test_2m_noslave_two_namesrvs_produce_consume(noslave, clients):
    topic = unique("T_2m")
    for _, addr in noslave.brokers.values():
        _create_topic(addr, topic)
    for _, ns in noslave.namesrvs:
        wait_until(lambda: _route_brokers(ns, topic) == ["broker-a", "broker-b"], 20,
                   "both masters in the route of %s on %s" % (topic, ns))

    p = clients.producer(noslave.namesrv_addr())
    bodies = ["cl-%d" % i for i in range(40)]
    for b in bodies:
        res = p.send_sync(make_message(topic, b))
        assert res.status == SendStatus.OK, res
    # The producer spread the messages over both masters.
    for name, (_, addr) in noslave.brokers.items():
        total = sum(remoting.get_max_offset(addr, topic, q) for q in range(QUEUES))
        assert total > 0, "%s received none of the messages" % name

    # One name server dies: a consumer given both addresses still finds the
    # route (through the other) and receives everything from both masters.
    noslave.namesrvs[0][0].kill9()
    col = Collector()
    clients.push_consumer(noslave.namesrv_addr(), unique("CG2m"), topic, col.callback_for("c"))
    wait_bodies(col, bodies, 60, what="messages from both masters")
    assert sorted(col.bodies()) == sorted(bodies)

    # The producer keeps working with one name server left.
    more = ["cl-more-%d" % i for i in range(10)]
    for b in more:
        assert p.send_sync(make_message(topic, b)).status == SendStatus.OK
    wait_bodies(col, more, 60, what="messages sent after a name server died")

"""Cluster layouts with the C++ client: conf/2m-noslave (two masters) behind
two name servers, the client given both as `a;b` (cluster.md §1-2).

The brokers run from the layout's own .properties files; only listenPort and
storePathRootDir (and namesrvAddr, to the run-time name servers) are
overridden on the command line.
"""

import os
import shutil
import time

import pytest
from rocketmq.client import SendStatus

import remoting
from conftest import running_layout
from helpers import Collector, make_message, unique, wait_bodies, wait_until

QUEUES = 4


@pytest.fixture
def noslave(request, tmp_path):
    with running_layout(request, tmp_path, "2m-noslave", ("broker-a", "broker-b")) as lay:
        yield lay


@pytest.fixture
def async_pair(request, tmp_path):
    """conf/2m-2s-async with two name servers; brokers started by the test."""
    with running_layout(request, tmp_path, "2m-2s-async") as lay:
        yield lay


def _create_topic(broker_addr, topic):
    r = remoting.invoke(broker_addr, 17, {
        "topic": topic, "defaultTopic": "TBW102", "readQueueNums": QUEUES,
        "writeQueueNums": QUEUES, "perm": 6, "topicFilterType": "SINGLE_TAG",
        "topicSysFlag": 0, "order": "false"})
    assert r.code == 0, r


def _send_retrying_route_race(p, msg):
    """One send of a C++ producer, retried (bounded) while the client fails
    it with "No route info of this topic". The client's heartbeat and route
    updates hold its connection lock while they connect to every broker of
    the route, and a send that cannot take that lock within a few ms gives
    up on every retry at once ("GetTransport ... get timed_mutex timeout" in
    its log, raised as "No route info"). Such a send never left the client,
    so retrying it cannot duplicate a message. Seen on the first send of a
    new producer, and (once, in a CI run on 2 CPUs) on its first send to
    the second master. Any other failure is raised at once."""
    from rocketmq.exceptions import ProducerSendSyncFailed
    for attempt in range(20):
        try:
            return p.send_sync(msg)
        except ProducerSendSyncFailed as e:
            if attempt == 19 or "No route info of this topic" not in str(e):
                raise
            time.sleep(0.25)


def _send_all(p, topic, bodies):
    """A new producer's sends of `bodies`, each acknowledged OK."""
    for b in bodies:
        res = _send_retrying_route_race(p, make_message(topic, b))
        assert res.status == SendStatus.OK, res


def _route_brokers(namesrv, topic):
    route = remoting.get_route(namesrv, topic) or {}
    return sorted(q["brokerName"] for q in route.get("queueDatas") or [])


def _wait_route_only_slave(lay, topic, slave):
    """Waits (bounded) until every name server of `lay` routes `topic` to
    the address `slave` only, in every broker of the route."""
    for _, ns in lay.namesrvs:
        def only_slave(ns=ns):
            route = remoting.get_route(ns, topic) or {}
            bds = [bd["brokerAddrs"] for bd in route.get("brokerDatas") or []]
            return bds and all(list(a.values()) == [slave] for a in bds)
        wait_until(only_slave, 30, "route of %s on %s to keep only the slave" % (topic, ns))


def test_2m_noslave_two_namesrvs_produce_consume(noslave, clients):
    topic = unique("T_2m")
    for _, addr in noslave.brokers.values():
        _create_topic(addr, topic)
    for _, ns in noslave.namesrvs:
        wait_until(lambda: _route_brokers(ns, topic) == ["broker-a", "broker-b"], 20,
                   "both masters in the route of %s on %s" % (topic, ns))

    p = clients.producer(noslave.namesrv_addr())
    bodies = ["cl-%d" % i for i in range(40)]
    _send_all(p, topic, bodies)
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


def _committed(broker_addr, group, topic):
    return {q: remoting.query_consumer_offset(broker_addr, group, topic, q) for q in range(QUEUES)}


def _max_offsets(broker_addr, topic):
    return {q: remoting.get_max_offset(broker_addr, topic, q) for q in range(QUEUES)}


def test_2m_2s_async_consumer_reads_the_slave_when_the_master_dies(async_pair, clients):
    """broker-a-s is given a copy of broker-a's commit log and queues but no
    config (this does not rely on commit-log replication): topics and
    consumer offsets reach it only through slave sync. After the master is
    kill -9'd, a consumer of the group resumes on the slave exactly where
    the group stopped on the master."""
    lay = async_pair
    topic = unique("T_2s")
    group = unique("CG2s")
    master = lay.start_broker("broker-a")
    _create_topic(master, topic)
    for _, ns in lay.namesrvs:
        wait_until(lambda: _route_brokers(ns, topic) == ["broker-a"], 20, "route of %s" % topic)
    p = clients.producer(lay.namesrv_addr())
    first = ["first-%02d" % i for i in range(20)]
    _send_all(p, topic, first)
    col1 = Collector()
    c1 = clients.push_consumer(lay.namesrv_addr(), group, topic, col1.callback_for("c1"))
    wait_bodies(col1, first, 60)
    ends = _max_offsets(master, topic)
    wait_until(lambda: _committed(master, group, topic) == ends, 40,
               lambda: "committed %r to reach %r" % (_committed(master, group, topic), ends))
    clients.stop_consumer(c1)
    second = ["second-%02d" % i for i in range(12)]
    for b in second:
        assert p.send_sync(make_message(topic, b)).status == SendStatus.OK

    # The slave's store: the master's data as of a clean stop, no config.
    mproc, _ = lay.brokers["broker-a"]
    _, clean = mproc.stop()
    assert clean
    shutil.copytree(lay.store_dir("broker-a"), lay.store_dir("broker-a-s"))
    shutil.rmtree(os.path.join(lay.store_dir("broker-a-s"), "config"))
    mproc.start(["rmq-broker ready"])
    slave = lay.start_broker("broker-a-s")

    # Slave sync brings the topic and the group's offsets over.
    def slave_has_metadata():
        r = remoting.invoke(slave, 21, {})
        has_topic = r.code == 0 and topic in (remoting.lenient_json(r.body).get("topicConfigTable") or {})
        return has_topic and _committed(slave, group, topic) == ends
    wait_until(slave_has_metadata, 30, "topic and offsets synced to the slave")
    for _, ns in lay.namesrvs:
        route = remoting.get_route(ns, topic)
        addrs = [bd["brokerAddrs"] for bd in route["brokerDatas"] if bd["brokerName"] == "broker-a"]
        assert addrs and sorted(int(k) for k in addrs[0]) == [0, 1], route

    # The master dies; the route keeps broker-a with the slave's address only.
    mproc.kill9()
    _wait_route_only_slave(lay, topic, slave)
    # Sends to the slave are refused (code 14), the consumer reads from it.
    r = remoting.invoke(slave, 310, {"a": "PG", "b": topic, "c": "TBW102", "d": 4, "e": 0, "f": 0,
                                     "g": 0, "h": 0, "i": "", "j": 0, "k": "false", "m": "false"},
                        body=b"x")
    assert r.code == 14, r
    col2 = Collector()
    clients.push_consumer(lay.namesrv_addr(), group, topic, col2.callback_for("c2"))
    wait_bodies(col2, second, 60, what="messages read from the slave")
    got = col2.bodies()
    redelivered = [b for b in got if not b.startswith("second-")]
    assert not redelivered, "the slave did not have the group's offsets: %r" % redelivered[:5]


@pytest.fixture
def sync_layout(request, tmp_path):
    """conf/2m-2s-sync, all four brokers, two name servers."""
    # Masters first: a slave learns its master from its registration.
    brokers = ("broker-a", "broker-b", "broker-a-s", "broker-b-s")
    with running_layout(request, tmp_path, "2m-2s-sync", brokers) as lay:
        yield lay


def _send_v2(addr, topic, body):
    return remoting.invoke(addr, 310, {"a": "PG", "b": topic, "c": "TBW102", "d": 4, "e": 0, "f": 0,
                                       "g": 0, "h": 0, "i": "", "j": 0, "k": "false", "m": "false"},
                           body=body.encode())


def test_2m_2s_sync_full_layout_consumer_reads_replicated_data_from_the_slave(sync_layout, clients):
    """Every send to a SYNC_MASTER is acknowledged once its slave has it; the
    master of broker-a is kill -9'd right after the last send, and a consumer
    still gets every message: broker-a's from its slave, broker-b's from its
    master."""
    lay = sync_layout
    topic = unique("T_sync")
    masters = {n: lay.brokers[n][1] for n in ("broker-a", "broker-b")}
    slave_a = lay.brokers["broker-a-s"][1]
    for addr in masters.values():
        _create_topic(addr, topic)
    for _, ns in lay.namesrvs:
        def both_groups_with_slaves(ns=ns):
            route = remoting.get_route(ns, topic) or {}
            ids = {bd["brokerName"]: sorted(int(k) for k in bd["brokerAddrs"])
                   for bd in route.get("brokerDatas") or []}
            return ids == {"broker-a": [0, 1], "broker-b": [0, 1]}
        wait_until(both_groups_with_slaves, 20, "masters and slaves of %s on %s" % (topic, ns))
    # Replication starts once each slave has reported its offset (up to 5 s
    # after connecting): until then a SYNC_MASTER send is not acknowledged.
    for name, addr in masters.items():
        wait_until(lambda: _send_v2(addr, topic, "warm-up").code == 0, 40,
                   "%s to acknowledge a send with its slave" % name)

    # A slave serves a topic once slave sync has copied its config (every 10 s).
    def slave_has_topic():
        r = remoting.invoke(slave_a, 21, {})
        return r.code == 0 and topic in (remoting.lenient_json(r.body).get("topicConfigTable") or {})
    wait_until(slave_has_topic, 30, "broker-a-s to sync the topic config of %s" % topic)

    p = clients.producer(lay.namesrv_addr())
    bodies = ["sync-%02d" % i for i in range(40)]
    _send_all(p, topic, bodies)
    lay.brokers["broker-a"][0].kill9()
    for _, ns in lay.namesrvs:
        def a_only_slave(ns=ns):
            route = remoting.get_route(ns, topic) or {}
            return [bd["brokerAddrs"] for bd in route.get("brokerDatas") or []
                    if bd["brokerName"] == "broker-a"] == [{"1": slave_a}]
        wait_until(a_only_slave, 30, "broker-a's route to keep only its slave on %s" % ns)
    # The slave has broker-a's share of the messages.
    assert sum(remoting.get_max_offset(slave_a, topic, q) for q in range(QUEUES)) > 0

    col = Collector()
    clients.push_consumer(lay.namesrv_addr(), unique("CGsync"), topic, col.callback_for("c"))
    wait_bodies(col, bodies, 60, what="messages from broker-a's slave and broker-b's master")
    # The producer goes on with broker-b (acknowledged with its slave).
    more = ["after-%02d" % i for i in range(8)]
    for b in more:
        assert p.send_sync(make_message(topic, b)).status == SendStatus.OK
    wait_bodies(col, more, 60, what="messages sent after broker-a's master died")

"""conf/2m-2s-sync broker-a (SYNC_MASTER) and broker-a-s (SLAVE) with the
C++ client (cluster.md §4, §6): without a slave a send is stored but answered
SLAVE_NOT_AVAILABLE; once the slave (which finds the master's HA address
through the name servers) is connected, sends are OK only after it holds
them, so after `kill -9` of the master a new consumer group reads every
acknowledged message from the slave.
"""

import pytest
from rocketmq.client import SendStatus
from rocketmq.exceptions import ProducerSendSyncFailed

import remoting
from helpers import Collector, make_message, unique, wait_bodies, wait_until
from conftest import running_layout
from test_cluster_layouts import (_create_topic, _route_brokers, _send_retrying_route_race,
                                  _wait_route_only_slave)


@pytest.fixture
def sync_pair(request, tmp_path):
    with running_layout(request, tmp_path, "2m-2s-sync") as lay:
        yield lay


def test_2m_2s_sync_acknowledged_messages_survive_the_master(sync_pair, clients):
    lay = sync_pair
    topic = unique("T_sync")
    master = lay.start_broker("broker-a")
    _create_topic(master, topic)
    for _, ns in lay.namesrvs:
        wait_until(lambda: _route_brokers(ns, topic) == ["broker-a"], 20, "route of %s" % topic)
    # No slave yet: stored, but answered SLAVE_NOT_AVAILABLE (11), never OK
    # (the C++ client retries such a send, then raises).
    r = remoting.send_message(master, topic, "before-slave", "WAIT\x01true")
    assert r.code == 11, (r.code, r.remark)
    assert r.ext.get("msgId"), r.ext

    slave = lay.start_broker("broker-a-s")
    p = clients.producer(lay.namesrv_addr())

    def acknowledged():
        try:
            return _send_retrying_route_race(p, make_message(topic, "probe")).status == SendStatus.OK
        except ProducerSendSyncFailed:
            return False
    wait_until(acknowledged, 30, "a send acknowledged once the slave connected", interval=0.5)
    bodies = ["sync-%02d" % i for i in range(40)]
    for b in bodies:
        assert p.send_sync(make_message(topic, b)).status == SendStatus.OK

    # The slave serves the topic once slave sync copied its config.
    def slave_knows_topic():
        r = remoting.invoke(slave, 21, {})
        return r.code == 0 and topic in (remoting.lenient_json(r.body).get("topicConfigTable") or {})
    wait_until(slave_knows_topic, 30, "topic synced to the slave")

    mproc, _ = lay.brokers["broker-a"]
    mproc.kill9()
    _wait_route_only_slave(lay, topic, slave)

    col = Collector()
    clients.push_consumer(lay.namesrv_addr(), unique("CGsync"), topic, col.callback_for("c"))
    wait_bodies(col, bodies + ["before-slave"], 60, what="acknowledged messages read from the slave")

"""Transactional messages as the real C++ consumer sees them.

rocketmq 0.4.4 has no transactional producer: `librocketmq.so` exports no C
API for one (`nm -D --defined-only` lists only mangled C++ symbols of
`rocketmq::TransactionMQProducer`; there is no `CreateTransactionProducer`,
`SendMessageTransaction` or similar), and the Python package wraps none. So
the producer side here is `remoting.py` sending what a Java transactional
producer sends (SEND_MESSAGE with sysFlag PREPARED, `TRAN_MSG`, `PGROUP`;
then END_TRANSACTION), and the consumer is the C++ PushConsumer.
Check-backs are covered by frontends/tests/broker_transaction.rs.
"""

import threading
import time

import remoting
from helpers import prepare_topic, unique, wait_until

PREPARED = 4
COMMIT = 8
ROLLBACK = 12


def _send(broker_addr, topic, body, props, sys_flag=0, group="PG_txn", queue_id=1):
    ext = {
        "producerGroup": group, "topic": topic, "defaultTopic": "TBW102",
        "defaultTopicQueueNums": 4, "queueId": queue_id, "sysFlag": sys_flag,
        "bornTimestamp": str(int(time.time() * 1000)), "flag": 0, "properties": props,
        "reconsumeTimes": "0", "unitMode": "false", "batch": "false",
    }
    r = remoting.invoke(broker_addr, 10, ext, body=body.encode())
    assert r.code == 0, r
    return r


def _send_half(broker_addr, topic, body, uniq, group):
    props = ("TAGS\x01TagT\x02KEYS\x01key-%s\x02UNIQ_KEY\x01%s\x02TRAN_MSG\x01true\x02PGROUP\x01%s"
             "\x02WAIT\x01true" % (body, uniq, group))
    r = _send(broker_addr, topic, body, props, sys_flag=PREPARED, group=group)
    msg_id = r.ext["msgId"]
    return {"uniq": uniq, "queue_offset": int(r.ext["queueOffset"]),
            "commit_log_offset": int(msg_id[16:32], 16)}


def _end(broker_addr, group, half, state):
    ext = {"producerGroup": group, "tranStateTableOffset": half["queue_offset"],
           "commitLogOffset": half["commit_log_offset"], "commitOrRollback": state,
           "fromTransactionCheck": "false", "msgId": half["uniq"], "transactionId": half["uniq"]}
    r = remoting.invoke(broker_addr, 37, ext)
    assert r.code == 0, r


def test_committed_delivered_once_rolled_back_never(cluster, clients):
    topic = unique("T_txn")
    group = unique("PG_txn")
    prepare_topic(clients, cluster, topic)
    lock = threading.Lock()
    got = []

    def text(v):
        return v.decode() if isinstance(v, bytes) else (v or "")

    def cb(msg):
        with lock:
            got.append({
                "body": text(msg.body), "id": text(msg.id), "tags": text(msg.tags),
                "keys": text(msg.keys), "queue_id": msg.queue_id,
                "prepared": msg.prepared_transaction_offset,
                "tran": text(msg.get_property("TRAN_MSG")),
                "pgroup": text(msg.get_property("PGROUP")),
            })

    def bodies():
        with lock:
            return [g["body"] for g in got]

    clients.push_consumer(cluster.namesrv_addr, unique("CG_txn"), topic, cb)
    _send(cluster.broker_addr, topic, "before", "TAGS\x01plain")
    wait_until(lambda: "before" in bodies(), 60, "the consumer to start consuming")

    commit = _send_half(cluster.broker_addr, topic, "committed", unique("U"), group)
    rollback = _send_half(cluster.broker_addr, topic, "rolled-back", unique("U"), group)
    # A plain message after the half messages in the same queue: once it is
    # consumed, a visible half message would have been consumed too.
    _send(cluster.broker_addr, topic, "after-half", "TAGS\x01plain")
    wait_until(lambda: "after-half" in bodies(), 30, "the message after the half messages")
    assert "committed" not in bodies() and "rolled-back" not in bodies(), bodies()

    _end(cluster.broker_addr, group, commit, COMMIT)
    _end(cluster.broker_addr, group, rollback, ROLLBACK)
    _send(cluster.broker_addr, topic, "after-end", "TAGS\x01plain")
    wait_until(lambda: "committed" in bodies() and "after-end" in bodies(), 30,
               lambda: "the committed message (got %r)" % bodies())

    b = bodies()
    assert b.count("committed") == 1, b
    assert "rolled-back" not in b, b
    c = [g for g in got if g["body"] == "committed"][0]
    assert c["id"] == commit["uniq"], "the consumer's id is the producer's UNIQ_KEY"
    assert (c["tags"], c["keys"], c["queue_id"]) == ("TagT", "key-committed", 1)
    assert c["tran"] == "true" and c["pgroup"] == group, c
    assert c["prepared"] == commit["commit_log_offset"], c

//! Consumer offsets and queue offset lookups: QUERY_CONSUMER_OFFSET (14),
//! UPDATE_CONSUMER_OFFSET (15), SEARCH_OFFSET_BY_TIMESTAMP (29),
//! GET_MAX_OFFSET (30), GET_MIN_OFFSET (31), GET_EARLIEST_MSG_STORETIME (32)
//! (remoting.md §7.6–7.7, semantics.md §10).

use super::{error, required, required_i32, required_i64, success, Reply};
use crate::broker::Broker;
use crate::remoting::codes::{request, response};
use crate::remoting::RemotingCommand;

pub fn handle(broker: &Broker, req: &RemotingCommand) -> Reply {
    match req.code {
        request::QUERY_CONSUMER_OFFSET => query_consumer_offset(broker, req),
        request::UPDATE_CONSUMER_OFFSET => {
            let group = required(req, "consumerGroup")?;
            let topic = required(req, "topic")?;
            let queue_id = required_i32(req, "queueId")?;
            let offset = required_i64(req, "commitOffset")?;
            broker.offsets.commit(group, topic, queue_id, offset);
            Ok(success())
        }
        request::SEARCH_OFFSET_BY_TIMESTAMP => {
            let topic = required(req, "topic")?;
            let queue_id = required_i32(req, "queueId")?;
            let ts = required_i64(req, "timestamp")?;
            let off = broker.store.queue_offset_by_time(topic, queue_id, ts);
            Ok(success().with_ext("offset", off))
        }
        request::GET_MAX_OFFSET => {
            let topic = required(req, "topic")?;
            let queue_id = required_i32(req, "queueId")?;
            let off = broker.store.max_queue_offset(topic, queue_id);
            Ok(success().with_ext("offset", off))
        }
        request::GET_MIN_OFFSET => {
            let topic = required(req, "topic")?;
            let queue_id = required_i32(req, "queueId")?;
            let off = broker.store.min_queue_offset(topic, queue_id);
            Ok(success().with_ext("offset", off))
        }
        request::GET_EARLIEST_MSG_STORETIME => {
            let topic = required(req, "topic")?;
            let queue_id = required_i32(req, "queueId")?;
            let ts = broker
                .store
                .earliest_message_time(topic, queue_id)
                .unwrap_or(-1);
            Ok(success().with_ext("timestamp", ts))
        }
        other => Err(error(
            response::REQUEST_CODE_NOT_SUPPORTED,
            format!(" request type {other} not supported"),
        )),
    }
}

/// Stored offset (a negative one counts as none, as in RocketMQ's
/// `offset >= 0` check); if none: 0 when the queue still starts at 0 (Java also
/// requires the first message to be "in memory"; we treat a queue starting
/// at 0 as such), else QUERY_NOT_FOUND so the client applies
/// consumeFromWhere.
fn query_consumer_offset(broker: &Broker, req: &RemotingCommand) -> Reply {
    let group = required(req, "consumerGroup")?;
    let topic = required(req, "topic")?;
    let queue_id = required_i32(req, "queueId")?;
    if let Some(off) = broker
        .offsets
        .query(group, topic, queue_id)
        .filter(|off| *off >= 0)
    {
        return Ok(success().with_ext("offset", off));
    }
    if broker.store.min_queue_offset(topic, queue_id) == 0 {
        return Ok(success().with_ext("offset", 0));
    }
    Err(error(
        response::QUERY_NOT_FOUND,
        "Not found, V3_0_6_SNAPSHOT maybe this group consumer boot first",
    ))
}

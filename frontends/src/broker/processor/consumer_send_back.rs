//! CONSUMER_SEND_MSG_BACK (36): a consumer returns a message it failed to
//! consume (remoting.md §7.8, semantics.md §4.2). The message is copied into
//! `%RETRY%<group>` (or `%DLQ%<group>` past the retry limit, at once).
//!
//! A retry waits first: its delay level (the request's, or 3 +
//! reconsumeTimes) sends it through `SCHEDULE_TOPIC_XXXX` with
//! `REAL_TOPIC=%RETRY%<group>`, the same path as a delayed send
//! ([`Schedule::divert`](crate::broker::Schedule::divert)).

use engine::record::{property, Decoded, MessageToStore};
use engine::PutStatus;

use super::{error, optional, required, required_i32, required_i64, success, Reply};
use crate::broker::topic_config::{perm, DLQ_GROUP_TOPIC_PREFIX, RETRY_GROUP_TOPIC_PREFIX};
use crate::broker::Broker;
use crate::remoting::codes::response;
use crate::remoting::command::version;
use crate::remoting::{ConnectionContext, RemotingCommand};

pub async fn handle(broker: &Broker, _ctx: &ConnectionContext, req: &RemotingCommand) -> Reply {
    let offset = required_i64(req, "offset")?;
    let group = required(req, "group")?;
    let delay_level = required_i32(req, "delayLevel")?;
    let Some(g) = broker.groups.find_or_create(group) else {
        return Err(error(
            response::SUBSCRIPTION_GROUP_NOT_EXIST,
            format!("subscription group not exist, {group}"),
        ));
    };
    if !perm::is_writeable(broker.config.broker_permission) {
        return Err(error(
            response::NO_PERMISSION,
            format!(
                "the broker[{}] sending message is forbidden",
                broker.config.broker_ip1()
            ),
        ));
    }
    if g.retry_queue_nums <= 0 {
        return Ok(success());
    }
    let retry_topic = format!("{RETRY_GROUP_TOPIC_PREFIX}{group}");
    let retry_tc = broker.topics.get_or_create_internal(
        &retry_topic,
        g.retry_queue_nums,
        perm::READ | perm::WRITE,
    );
    if !perm::is_writeable(retry_tc.perm) {
        return Err(error(
            response::NO_PERMISSION,
            format!("the topic[{retry_topic}] sending message is forbidden"),
        ));
    }
    let Some(slice) = u64::try_from(offset)
        .ok()
        .and_then(|o| broker.store.read_record(o))
    else {
        return Err(error(
            response::SYSTEM_ERROR,
            format!("look message by offset failed, {offset}"),
        ));
    };
    let Decoded::Message(rec) = engine::record::decode(slice.as_bytes(), false) else {
        return Err(error(
            response::SYSTEM_ERROR,
            format!("look message by offset failed, {offset}"),
        ));
    };
    let max_reconsume = match optional(req, "maxReconsumeTimes").and_then(|v| v.parse().ok()) {
        Some(m) if req.version >= version::V3_4_9 => m,
        _ => g.retry_max_times,
    };
    let mut pairs: Vec<(String, String)> = engine::record::parse_properties(rec.properties)
        .into_iter()
        .filter(|(k, _)| {
            !matches!(
                *k,
                "RETRY_TOPIC" | property::DELAY | property::WAIT | "ORIGIN_MESSAGE_ID"
            )
        })
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let retry_topic_prop = rec
        .property("RETRY_TOPIC")
        .map(str::to_string)
        .unwrap_or_else(|| rec.topic.to_string());
    let origin_id = rec
        .property("ORIGIN_MESSAGE_ID")
        .map(str::to_string)
        .unwrap_or_else(|| rec.offset_msg_id());
    let (topic, queue_id, delay) = if rec.reconsume_times >= max_reconsume || delay_level < 0 {
        let dlq = format!("{DLQ_GROUP_TOPIC_PREFIX}{group}");
        broker
            .topics
            .get_or_create_internal(&dlq, 1, perm::READ | perm::WRITE);
        (dlq, 0, 0)
    } else {
        let q = (rec.queue_offset.unsigned_abs() % g.retry_queue_nums as u64) as i32;
        // The count comes from the producer's header: wrap like Java's int
        // arithmetic rather than overflow.
        let delay = if delay_level == 0 {
            rec.reconsume_times.wrapping_add(3)
        } else {
            delay_level
        };
        (retry_topic, q, delay)
    };
    pairs.push(("RETRY_TOPIC".into(), retry_topic_prop));
    pairs.push((property::DELAY.into(), delay.to_string()));
    pairs.push((property::WAIT.into(), "false".into()));
    pairs.push(("ORIGIN_MESSAGE_ID".into(), origin_id));
    let mut msg = MessageToStore {
        topic,
        queue_id,
        flag: rec.flag,
        body: rec.body.to_vec(),
        properties: engine::record::serialize_properties(
            pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        ),
        sys_flag: rec.sys_flag,
        born_timestamp: rec.born_timestamp,
        born_host: rec.born_host,
        store_host: broker.store_host,
        reconsume_times: rec.reconsume_times.wrapping_add(1),
        prepared_transaction_offset: 0,
        wait_for_flush: false,
    };
    drop(slice);
    if let Some(level) = broker.schedule.delay_level(&msg.properties, msg.sys_flag) {
        broker.schedule.divert(&mut msg, level);
    }
    match broker.store.put_message_async(&msg).await {
        Ok(r) if r.status == PutStatus::PutOk => Ok(success()),
        Ok(r) => Err(error(response::SYSTEM_ERROR, format!("{:?}", r.status))),
        Err(e) => Err(error(response::SYSTEM_ERROR, e.to_string())),
    }
}

//! SEND_MESSAGE (10), SEND_MESSAGE_V2 (310), SEND_BATCH_MESSAGE (320)
//! (remoting.md §7.1, semantics.md §2, §4.3, §12).
//!
//! The path, top to bottom, all on the connection's task: read the header
//! (long names for 10, one-letter names for 310/320) → check the topic
//! (name, forbidden system topics, auto-create from TBW102) → pick the
//! queue → retry/DLQ redirection for `%RETRY%` topics → build the record
//! (properties + CLUSTER, born host = peer, store host = us) → append and
//! await the group commit → map the store status to the response code.
//!
//! Deliberate choices:
//! * A batch is recognised by the `batch`/`m` flag, read leniently: the C++
//!   client's `"1"` counts as true, so its batches are unpacked into
//!   separate messages (the client's intent) rather than stored as one blob
//!   as a Java broker would.
//! * A batch whose records would take more than [`MAX_BATCH_EXPANSION`]
//!   times `maxMessageSize` is refused (MESSAGE_ILLEGAL); Java has no such
//!   bound, but its batch-level properties are copied into every entry.
//! * `WAIT` is stripped from the stored properties of plain single messages
//!   (4.9.1+); its meaning travels to the store as
//!   `MessageToStore::wait_for_flush`.
//! * Delayed messages (`DELAY` > 0, not a prepared/rollback transaction
//!   message) are diverted into `SCHEDULE_TOPIC_XXXX` by
//!   [`Schedule::divert`](crate::broker::Schedule::divert); the response
//!   reports the requested queue and the schedule queue's offset. As in
//!   Java 4.9.8, a `%RETRY%` send redirected to the DLQ keeps the client's
//!   `DELAY`, so it reaches the DLQ through the schedule topic.
//! * Transactional (`TRAN_MSG=true`) messages become half messages in
//!   `RMQ_SYS_TRANS_HALF_TOPIC` ([`transaction::divert_to_half`], keeping
//!   `WAIT` as Java's stored string does); the response reports the
//!   requested queue and the half queue's offset. They are never delayed.

use std::sync::atomic::{AtomicU64, Ordering};

use engine::record::{property, sysflag, MessageToStore};
use engine::{PutResult, PutStatus, StoreError};

use super::{error, java_bool, optional, required, success, Reply};
use crate::broker::topic_config::{
    self, perm, TopicConfig, DLQ_GROUP_TOPIC_PREFIX, RETRY_GROUP_TOPIC_PREFIX,
};
use crate::broker::{transaction, Broker};
use crate::remoting::codes::{request, response};
use crate::remoting::command::version;
use crate::remoting::{ConnectionContext, RemotingCommand};

/// SendMessageRequestHeader, whichever way it was spelled.
#[derive(Debug, Clone)]
pub struct SendHeader {
    pub producer_group: String,
    pub topic: String,
    pub default_topic: String,
    pub default_topic_queue_nums: i32,
    pub queue_id: i32,
    pub sys_flag: i32,
    pub born_timestamp: i64,
    pub flag: i32,
    pub properties: String,
    pub reconsume_times: i32,
    pub unit_mode: bool,
    pub max_reconsume_times: Option<i32>,
    pub batch: bool,
}

fn num<T: std::str::FromStr>(
    req: &RemotingCommand,
    key: &str,
    name: &str,
) -> Result<Option<T>, RemotingCommand> {
    match optional(req, key) {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| {
            error(
                response::SYSTEM_ERROR,
                format!("the custom field <{name}> is not a number: {v}"),
            )
        }),
    }
}

fn req_num<T: std::str::FromStr>(
    req: &RemotingCommand,
    key: &str,
    name: &str,
) -> Result<T, RemotingCommand> {
    num(req, key, name)?.ok_or_else(|| {
        error(
            response::SYSTEM_ERROR,
            format!("the custom field <{name}> is null"),
        )
    })
}

impl SendHeader {
    /// Decodes the header: one-letter names for 310/320, long names for 10.
    pub fn parse(req: &RemotingCommand) -> Result<SendHeader, RemotingCommand> {
        let short = req.code != request::SEND_MESSAGE;
        let k = |s: &'static str, l: &'static str| if short { s } else { l };
        let str_field = |s, l: &'static str| {
            required(req, k(s, l)).map_err(|_| {
                error(
                    response::SYSTEM_ERROR,
                    format!("the custom field <{l}> is null"),
                )
            })
        };
        let batch_flag = req.ext(k("m", "batch")).unwrap_or("");
        Ok(SendHeader {
            producer_group: str_field("a", "producerGroup")?.to_string(),
            topic: str_field("b", "topic")?.to_string(),
            default_topic: optional(req, k("c", "defaultTopic"))
                .unwrap_or(topic_config::AUTO_CREATE_TOPIC_KEY_TOPIC)
                .to_string(),
            default_topic_queue_nums: num(
                req,
                k("d", "defaultTopicQueueNums"),
                "defaultTopicQueueNums",
            )?
            .unwrap_or(4),
            queue_id: req_num(req, k("e", "queueId"), "queueId")?,
            sys_flag: num(req, k("f", "sysFlag"), "sysFlag")?.unwrap_or(0),
            born_timestamp: num(req, k("g", "bornTimestamp"), "bornTimestamp")?.unwrap_or(0),
            flag: num(req, k("h", "flag"), "flag")?.unwrap_or(0),
            properties: req.ext(k("i", "properties")).unwrap_or("").to_string(),
            reconsume_times: num(req, k("j", "reconsumeTimes"), "reconsumeTimes")?.unwrap_or(0),
            unit_mode: java_bool(req, k("k", "unitMode")),
            max_reconsume_times: num(req, k("l", "maxReconsumeTimes"), "maxReconsumeTimes")?,
            batch: batch_flag.eq_ignore_ascii_case("true") || batch_flag == "1",
        })
    }
}

/// Java `random.nextInt(99999999) % writeQueueNums`, without a lock.
fn random_queue(write_queue_nums: i32) -> i32 {
    static STATE: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    let mut x = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    ((x % 99_999_999) as i32) % write_queue_nums.max(1)
}

pub async fn handle(broker: &Broker, ctx: &ConnectionContext, req: &RemotingCommand) -> Reply {
    if broker.store.is_os_page_cache_busy() {
        return Err(error(
            response::SYSTEM_BUSY,
            "[REJECTREQUEST]system busy, start flow control for a while",
        ));
    }
    let h = SendHeader::parse(req)?;
    let cfg = &broker.config;
    if cfg.start_accept_send_request_time_stamp > super::now_ms() {
        return Err(error(
            response::SYSTEM_ERROR,
            format!(
                "broker unable to service, until {}",
                cfg.start_accept_send_request_time_stamp
            ),
        ));
    }
    // A batch's topic is checked like any send's (SYSTEM_ERROR beyond 127
    // characters): Java's own MESSAGE_ILLEGAL check of a batch topic's
    // length comes after that and never fires.
    let tc = check_topic(broker, &h)?;
    let mut queue_id = h.queue_id;
    let id_valid = tc.read_queue_nums.max(tc.write_queue_nums);
    if queue_id >= id_valid {
        return Err(error(
            response::SYSTEM_ERROR,
            format!(
                "request queueId[{queue_id}] is illegal, {tc:?} Producer: {}",
                ctx.peer_addr()
            ),
        ));
    }
    if queue_id < 0 {
        queue_id = random_queue(tc.write_queue_nums);
    }
    let mut sys_flag = h.sys_flag;
    if tc.is_multi_tag() {
        sys_flag |= sysflag::MULTI_TAGS;
    }
    let template = MessageToStore {
        topic: h.topic.clone(),
        queue_id,
        flag: h.flag,
        body: Vec::new(),
        properties: String::new(),
        sys_flag,
        born_timestamp: h.born_timestamp,
        born_host: ctx.peer_addr(),
        store_host: broker.store_host,
        reconsume_times: h.reconsume_times,
        prepared_transaction_offset: 0,
        wait_for_flush: MessageToStore::wait_property(&h.properties),
    };
    let delay = requested_delay(&h.properties)?;
    if h.batch {
        send_batch(broker, &h, template, delay, &req.body).await
    } else {
        send_single(broker, req, &h, template, delay, &req.body).await
    }
}

/// The request's delay level (`DELAY`), 0 when it has none. A value that
/// is not a number fails the send with SYSTEM_ERROR, as Java's store does
/// (its `Integer.parseInt` throws), rather than storing the message
/// undelayed.
fn requested_delay(properties: &str) -> Result<i32, RemotingCommand> {
    match engine::record::find_property(properties, property::DELAY) {
        None => Ok(0),
        Some(d) => d.trim().parse::<i32>().map_err(|_| {
            error(
                response::SYSTEM_ERROR,
                format!("invalid delay level in property DELAY: {d:?} is not a number"),
            )
        }),
    }
}

/// Name rules, forbidden topics, lookup or auto-creation (semantics.md §1.2, §1.4).
fn check_topic(broker: &Broker, h: &SendHeader) -> Result<TopicConfig, RemotingCommand> {
    topic_config::validate_topic_name(&h.topic).map_err(|e| error(response::SYSTEM_ERROR, e))?;
    if topic_config::is_send_forbidden(&h.topic) {
        return Err(error(
            response::NO_PERMISSION,
            format!("Sending message to topic[{}] is forbidden.", h.topic),
        ));
    }
    let sys_flag = if h.unit_mode { 1 } else { 0 };
    let (tc, _created) = broker
        .topics
        .get_or_create_for_send(
            &h.topic,
            &h.default_topic,
            h.default_topic_queue_nums,
            sys_flag,
        )
        .map_err(|topic_config::CreateError::NotExist(why)| {
            error(response::TOPIC_NOT_EXIST, why)
        })?;
    if !perm::is_writeable(broker.config.broker_permission) && tc.order {
        return Err(error(
            response::NO_PERMISSION,
            format!(
                "the broker[{}] sending message is forbidden",
                broker.config.broker_ip1()
            ),
        ));
    }
    Ok(tc)
}

/// Properties to store for a single message: the request's pairs (in
/// request order) minus `WAIT` for plain messages (4.9.1+; the store gets
/// it as `MessageToStore::wait_for_flush`), plus CLUSTER.
fn single_properties(broker: &Broker, props: &str, plain: bool) -> String {
    let mut pairs: Vec<(&str, &str)> = engine::record::parse_properties(props)
        .into_iter()
        .filter(|(k, _)| *k != property::CLUSTER && !(plain && *k == property::WAIT))
        .collect();
    pairs.push((property::CLUSTER, &broker.config.broker_cluster_name));
    engine::record::serialize_properties(pairs)
}

async fn send_single(
    broker: &Broker,
    req: &RemotingCommand,
    h: &SendHeader,
    mut msg: MessageToStore,
    delay: i32,
    body: &[u8],
) -> Reply {
    // %RETRY% sends: group must exist; past max reconsume times → DLQ (§4.3).
    if let Some(group) = h.topic.strip_prefix(RETRY_GROUP_TOPIC_PREFIX) {
        let Some(g) = broker.groups.find_or_create(group) else {
            return Err(error(
                response::SUBSCRIPTION_GROUP_NOT_EXIST,
                format!("subscription group not exist, {group} https://rocketmq.apache.org/docs/bestPractice/06FAQ"),
            ));
        };
        let max = match h.max_reconsume_times {
            Some(m) if req.version >= version::V3_4_9 => m,
            _ => g.retry_max_times,
        };
        if h.reconsume_times >= max {
            let dlq = format!("{DLQ_GROUP_TOPIC_PREFIX}{group}");
            broker
                .topics
                .get_or_create_internal(&dlq, 1, perm::READ | perm::WRITE);
            tracing::info!(
                group,
                reconsume = h.reconsume_times,
                "retry message sent to DLQ"
            );
            msg.topic = dlq;
            msg.queue_id = 0;
        }
    }
    let transactional = transaction::is_half_message(&h.properties, h.reconsume_times);
    let delay_level = (!transactional)
        .then(|| broker.schedule.level_for(delay, msg.sys_flag))
        .flatten();
    let delayed = delay_level.is_some();
    if transactional && broker.config.reject_transaction_message {
        return Err(error(
            response::NO_PERMISSION,
            format!(
                "the broker[{}] sending transaction message is forbidden",
                broker.config.broker_ip1()
            ),
        ));
    }
    msg.properties = single_properties(broker, &h.properties, !(delayed || transactional));
    msg.body = body.to_vec();
    let reply_queue = msg.queue_id;
    if let Some(level) = delay_level {
        broker.schedule.divert(&mut msg, level);
    }
    if transactional {
        transaction::divert_to_half(&mut msg);
    }
    check_sizes(broker, &msg)?;
    let result = broker.store.put_message_async(&msg).await;
    respond(broker, result, reply_queue)
}

fn check_sizes(broker: &Broker, msg: &MessageToStore) -> Result<(), RemotingCommand> {
    let max = broker.store.config().max_message_size as usize;
    msg.validate(max)
        .map_err(|e| error(response::MESSAGE_ILLEGAL, e))
}

/// How many times `maxMessageSize` the records of one batch may take.
/// Every entry is stored with the batch-level properties (up to 32 KB) and
/// the fixed fields and topic (up to about 230 bytes), so a request of
/// many tiny entries could otherwise store, and first build in memory,
/// over a thousand times its size. Java sets no such bound. Batches from
/// real clients stay below it: Java's (non-empty bodies, a 41-byte
/// UNIQ_KEY each) store at most about 5.2 times their size, even with a
/// 127-character topic, and C++ batches of empty bodies without
/// properties at most about 11 times.
const MAX_BATCH_EXPANSION: usize = 16;

/// One decoded batch entry (remoting.md §8.3).
struct Entry<'a> {
    flag: i32,
    body: &'a [u8],
    properties: &'a str,
}

fn decode_batch(mut buf: &[u8]) -> Result<Vec<Entry<'_>>, String> {
    let mut out = Vec::new();
    let be32 = |b: &[u8]| i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    while !buf.is_empty() {
        if buf.len() < 20 {
            return Err(format!("batch entry truncated: {} bytes left", buf.len()));
        }
        let total = be32(&buf[0..4]);
        let flag = be32(&buf[12..16]);
        let body_len = be32(&buf[16..20]);
        if body_len < 0 || 20 + body_len as usize + 2 > buf.len() {
            return Err(format!("batch entry body length {body_len} out of range"));
        }
        let body_end = 20 + body_len as usize;
        let prop_len = i16::from_be_bytes([buf[body_end], buf[body_end + 1]]);
        if prop_len < 0 || body_end + 2 + prop_len as usize > buf.len() {
            return Err(format!(
                "batch entry properties length {prop_len} out of range"
            ));
        }
        let end = body_end + 2 + prop_len as usize;
        if total >= 0 && total as usize != end {
            tracing::debug!(
                total,
                end,
                "batch entry TOTALSIZE disagrees with its contents"
            );
        }
        let properties = std::str::from_utf8(&buf[body_end + 2..end])
            .map_err(|_| "batch entry properties are not UTF-8".to_string())?;
        out.push(Entry {
            flag,
            body: &buf[20..body_end],
            properties,
        });
        buf = &buf[end..];
    }
    if out.is_empty() {
        return Err("empty batch".to_string());
    }
    Ok(out)
}

async fn send_batch(
    broker: &Broker,
    h: &SendHeader,
    template: MessageToStore,
    delay: i32,
    body: &[u8],
) -> Reply {
    if h.sys_flag & sysflag::TRANSACTION_MASK != 0 {
        return Err(error(
            response::MESSAGE_ILLEGAL,
            "batch request does not support transaction message",
        ));
    }
    if delay > 0 {
        return Err(error(
            response::MESSAGE_ILLEGAL,
            "batch request does not support delay message",
        ));
    }
    let max = broker.store.config().max_message_size as usize;
    if body.len() > max {
        return Err(error(
            response::MESSAGE_ILLEGAL,
            format!("the message body size over max value, MAX: {max}"),
        ));
    }
    let entries = decode_batch(body).map_err(|e| error(response::MESSAGE_ILLEGAL, e))?;
    // Batch-level properties (header + CLUSTER) appended to every entry (store.md §3.4).
    let mut batch_props = engine::record::parse_properties(&h.properties)
        .into_iter()
        .filter(|(k, _)| *k != property::CLUSTER)
        .collect::<Vec<_>>();
    batch_props.push((property::CLUSTER, &broker.config.broker_cluster_name));
    let batch_props = engine::record::serialize_properties(batch_props);
    let stored_max = MAX_BATCH_EXPANSION * max;
    let mut stored = 0usize;
    let mut msgs = Vec::with_capacity(entries.len());
    for e in entries {
        let mut m = template.clone();
        m.flag = e.flag;
        m.body = e.body.to_vec();
        let mut props = String::with_capacity(e.properties.len() + 1 + batch_props.len());
        props.push_str(e.properties);
        if !props.is_empty() && !props.ends_with(property::PROPERTY_SEPARATOR) {
            props.push(property::PROPERTY_SEPARATOR);
        }
        props.push_str(&batch_props);
        m.properties = props;
        check_sizes(broker, &m)?;
        stored += m.encoded_len();
        if stored > stored_max {
            return Err(error(
                response::MESSAGE_ILLEGAL,
                format!(
                    "the batch would store more than {stored_max} bytes \
                     ({MAX_BATCH_EXPANSION} x maxMessageSize {max})"
                ),
            ));
        }
        msgs.push(m);
    }
    let queue_id = template.queue_id;
    let result = broker.store.put_batch_async(&msgs).await;
    respond(broker, result, queue_id)
}

/// Store outcome → response (remoting.md §7.1).
fn respond(broker: &Broker, result: engine::Result<PutResult>, queue_id: i32) -> Reply {
    let r = match result {
        Ok(r) => r,
        Err(StoreError::InvalidArgument(why)) => return Err(error(response::MESSAGE_ILLEGAL, why)),
        Err(
            e @ (StoreError::ReadOnly(_)
            | StoreError::ShutDown
            | StoreError::DiskFull(_)
            | StoreError::DispatchStalled(_)
            | StoreError::SlaveMode),
        ) => {
            return Err(error(
                response::SERVICE_NOT_AVAILABLE,
                format!("service not available now. {e}"),
            ))
        }
        Err(e) => return Err(error(response::SYSTEM_ERROR, e.to_string())),
    };
    let code = match r.status {
        PutStatus::PutOk => response::SUCCESS,
        PutStatus::FlushDiskTimeout => response::FLUSH_DISK_TIMEOUT,
        PutStatus::FlushSlaveTimeout => response::FLUSH_SLAVE_TIMEOUT,
        PutStatus::SlaveNotAvailable => response::SLAVE_NOT_AVAILABLE,
    };
    let msg_id = r
        .messages
        .iter()
        .map(|m| m.msg_id())
        .collect::<Vec<_>>()
        .join(",");
    let queue_offset = r.messages.first().map(|m| m.queue_offset).unwrap_or(0);
    let mut resp = if code == response::SUCCESS {
        success()
    } else {
        RemotingCommand::response(code)
    };
    resp = resp
        .with_ext("msgId", msg_id)
        .with_ext("queueId", queue_id)
        .with_ext("queueOffset", queue_offset)
        .with_ext("MSG_REGION", &broker.config.region_id)
        .with_ext("TRACE_ON", broker.config.trace_on);
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_decoding() {
        let mut buf = Vec::new();
        for (body, props) in [(&b"hello"[..], "UNIQ_KEY\u{1}A"), (&b"w"[..], "")] {
            let total = 20 + body.len() + 2 + props.len();
            buf.extend_from_slice(&(total as i32).to_be_bytes());
            buf.extend_from_slice(&0i32.to_be_bytes());
            buf.extend_from_slice(&0i32.to_be_bytes());
            buf.extend_from_slice(&7i32.to_be_bytes());
            buf.extend_from_slice(&(body.len() as i32).to_be_bytes());
            buf.extend_from_slice(body);
            buf.extend_from_slice(&(props.len() as i16).to_be_bytes());
            buf.extend_from_slice(props.as_bytes());
        }
        let e = decode_batch(&buf).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(
            (e[0].flag, e[0].body, e[0].properties),
            (7, &b"hello"[..], "UNIQ_KEY\u{1}A")
        );
        assert!(decode_batch(&buf[..buf.len() - 1]).is_err());
    }

    #[test]
    fn random_queue_in_range() {
        for _ in 0..100 {
            let q = random_queue(4);
            assert!((0..4).contains(&q));
        }
    }
}

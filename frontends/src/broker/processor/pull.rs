//! PULL_MESSAGE (11): read a queue from an offset (remoting.md §7.2,
//! semantics.md §6). A pull that finds nothing and may suspend is held by
//! [`LongPolling`](crate::broker::LongPolling) and re-run once a matching
//! message arrives or its suspend timeout passes.
//!
//! The subscription (semantics.md §7–8) is the request's own when the
//! SUBSCRIPTION flag is set, else the one registered by heartbeat. SQL92
//! subscriptions, as RocketMQ 4.9 answers them:
//!
//! | case | code |
//! |---|---|
//! | flag set, empty expression | 23 SUBSCRIPTION_PARSE_FAILED |
//! | `enablePropertyFilter=false` (valid or not) | 1 SYSTEM_ERROR `The broker does not support consumer to filter message by SQL92` |
//! | flag set, expression does not compile | 23 SUBSCRIPTION_PARSE_FAILED (remark says why) |
//! | no flag, heartbeat registered no compiled filter | 27 FILTER_DATA_NOT_EXIST |
//! | no flag, registered filter older than `subVersion` | 28 FILTER_DATA_NOT_LATEST |
//!
//! (27/28 are checked before `enablePropertyFilter`, as in RocketMQ.) With
//! `filterSupportRetry=true` a pull on `%RETRY%<group>` also applies the
//! group's selector of each message's original topic. One
//! deliberate difference: RocketMQ 4.9.8, run without `-ea`, lets a pull
//! whose own expression does not compile through with *no* filter (its
//! `assert consumerFilterData != null` is all that guards it), returning
//! every message; we answer 23, the code its own try/catch intends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use engine::record::{self, property, MessageToStore};
use engine::{AcceptAll, GetMessageResult, GetMessageStatus, TagCodes};

use super::{error, optional, required, required_i32, required_i64};
use crate::broker::filter::{RetryTopicFilter, Selector, SqlFilter};
use crate::broker::long_polling::SharedFilter;
use crate::broker::subscription_group::SubscriptionGroupConfig;
use crate::broker::topic_config::{perm, OFFSET_MOVED_EVENT, RETRY_GROUP_TOPIC_PREFIX};
use crate::broker::{Broker, SubscriptionData};
use crate::remoting::codes::response;
use crate::remoting::{ConnectionContext, RemotingCommand};

const FLAG_COMMIT_OFFSET: i32 = 0x1;
const FLAG_SUSPEND: i32 = 0x2;
const FLAG_SUBSCRIPTION: i32 = 0x4;

/// RocketMQ's PullRequestHoldService check interval under long polling: a
/// held pull whose queue already goes past its offset is re-run then.
const HOLD_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// The parsed request header.
struct PullRequest<'a> {
    group: &'a str,
    topic: &'a str,
    queue_id: i32,
    offset: i64,
    max_msgs: i32,
    sys_flag: i32,
    commit_offset: i64,
    suspend_ms: i64,
}

impl<'a> PullRequest<'a> {
    fn parse(req: &'a RemotingCommand) -> Result<Self, RemotingCommand> {
        Ok(PullRequest {
            group: required(req, "consumerGroup")?,
            topic: required(req, "topic")?,
            queue_id: required_i32(req, "queueId")?,
            offset: required_i64(req, "queueOffset")?,
            max_msgs: required_i32(req, "maxMsgNums")?,
            sys_flag: required_i32(req, "sysFlag")?,
            commit_offset: super::optional_i64(req, "commitOffset")?.unwrap_or(-1),
            suspend_ms: super::optional_i64(req, "suspendTimeoutMillis")?.unwrap_or(15_000),
        })
    }
}

/// What one processing pass decided.
enum Pass {
    Reply(RemotingCommand),
    /// Nothing yet: park until a message passing `filter` reaches this offset.
    Suspend {
        filter: SharedFilter,
        hold: Duration,
        /// The queue offset a new message must reach to wake the pull.
        wake_from: u64,
    },
}

/// Handles one PULL_MESSAGE request (main port only).
pub async fn handle(
    broker: &Arc<Broker>,
    _ctx: &ConnectionContext,
    request: RemotingCommand,
) -> Option<RemotingCommand> {
    match process(broker, &request, true) {
        Ok(Pass::Reply(r)) => Some(r),
        Err(e) => Some(e),
        Ok(Pass::Suspend {
            filter,
            hold,
            wake_from,
        }) => {
            let Ok(p) = PullRequest::parse(&request) else {
                return Some(error(response::SYSTEM_ERROR, "bad pull header"));
            };
            let store = broker.store.clone();
            let (topic, queue_id) = (p.topic.to_string(), p.queue_id);
            broker
                .long_polling
                .wait(
                    p.topic,
                    p.queue_id,
                    wake_from,
                    filter,
                    Instant::now() + hold,
                    move || store.max_queue_offset(&topic, queue_id),
                )
                .await;
            match process(broker, &request, false) {
                Ok(Pass::Reply(r)) => Some(r),
                Err(e) => Some(e),
                Ok(Pass::Suspend { .. }) => {
                    Some(error(response::PULL_NOT_FOUND, "OFFSET_OVERFLOW_ONE"))
                }
            }
        }
    }
}

/// The engine filter of a subscription: tag codes, or the compiled SQL92
/// selector.
fn filter_of(sub: &SubscriptionData, selector: Option<Arc<Selector>>) -> SharedFilter {
    match selector {
        Some(s) => Arc::new(SqlFilter(s)),
        None if sub.matches_all() || sub.codes_set.is_empty() => Arc::new(AcceptAll),
        None => Arc::new(TagCodes(sub.codes_set.iter().copied().collect())),
    }
}

/// The pull's subscription and, for SQL92, its compiled selector (see the
/// module doc for the answers). A pull relying on the heartbeat's
/// subscription from a broadcasting consumer of a group with
/// `consumeBroadcastEnable=false` is refused (16), as in RocketMQ.
fn subscription(
    broker: &Broker,
    group: &SubscriptionGroupConfig,
    req: &RemotingCommand,
    p: &PullRequest<'_>,
) -> Result<(SubscriptionData, Option<Arc<Selector>>), RemotingCommand> {
    let wanted = super::optional_i64(req, "subVersion")?.unwrap_or(0);
    let not_supported = |sub: &SubscriptionData| {
        error(
            response::SYSTEM_ERROR,
            format!(
                "The broker does not support consumer to filter message by {}",
                sub.expression_type
            ),
        )
    };
    if p.sys_flag & FLAG_SUBSCRIPTION != 0 {
        let expr = optional(req, "subscription").unwrap_or("");
        let sub = SubscriptionData::from_expression(
            p.topic,
            if expr.is_empty() { "*" } else { expr },
            optional(req, "expressionType"),
            wanted,
        );
        if sub.is_tag_type() {
            return Ok((sub, None));
        }
        let parse_failed = |why: String| {
            error(
                response::SUBSCRIPTION_PARSE_FAILED,
                format!("parse the consumer's subscription failed: {why}"),
            )
        };
        if expr.is_empty() {
            return Err(parse_failed(format!(
                "Expression can't be null! {}",
                sub.expression_type
            )));
        }
        if !broker.config.enable_property_filter {
            return Err(not_supported(&sub));
        }
        let selector = broker
            .consumer_filters
            .compile(&sub.expression_type, expr)
            .map_err(|e| parse_failed(e.to_string()))?;
        return Ok((sub, Some(selector)));
    }
    let Some(info) = broker.clients.consumer_group(p.group) else {
        return Err(error(
            response::SUBSCRIPTION_NOT_EXIST,
            format!("the consumer's group info not exist, group: {}", p.group),
        ));
    };
    if info.message_model == "BROADCASTING" && !group.consume_broadcast_enable {
        return Err(error(
            response::NO_PERMISSION,
            format!(
                "the consumer group[{}] can not consume by broadcast way",
                p.group
            ),
        ));
    }
    let Some(sub) = info.subscriptions.get(p.topic).cloned() else {
        return Err(error(
            response::SUBSCRIPTION_NOT_EXIST,
            format!("the consumer's subscription not exist, group: {}", p.group),
        ));
    };
    if sub.sub_version < wanted {
        return Err(error(
            response::SUBSCRIPTION_NOT_LATEST,
            format!("the consumer's subscription not latest, group: {}", p.group),
        ));
    }
    if sub.is_tag_type() {
        return Ok((sub, None));
    }
    let Some(registered) = broker.consumer_filters.get(p.topic, p.group) else {
        return Err(error(
            response::FILTER_DATA_NOT_EXIST,
            "The broker's consumer filter data is not exist!Your expression may be wrong!",
        ));
    };
    if registered.client_version < wanted {
        return Err(error(
            response::FILTER_DATA_NOT_LATEST,
            "the consumer's consumer filter data not latest",
        ));
    }
    if !broker.config.enable_property_filter {
        return Err(not_supported(&sub));
    }
    Ok((sub, Some(registered.selector)))
}

fn process(
    broker: &Arc<Broker>,
    req: &RemotingCommand,
    first_pass: bool,
) -> Result<Pass, RemotingCommand> {
    let p = PullRequest::parse(req)?;
    if !perm::is_readable(broker.config.broker_permission) {
        return Err(error(
            response::NO_PERMISSION,
            format!(
                "the broker[{}] pulling message is forbidden",
                broker.config.broker_ip1()
            ),
        ));
    }
    let Some(group) = broker.groups.find_or_create(p.group) else {
        return Err(error(
            response::SUBSCRIPTION_GROUP_NOT_EXIST,
            format!("subscription group [{}] does not exist", p.group),
        ));
    };
    if !group.consume_enable {
        return Err(error(
            response::NO_PERMISSION,
            format!("subscription group no permission, {}", p.group),
        ));
    }
    let Some(topic) = broker.topics.get(p.topic) else {
        return Err(error(
            response::TOPIC_NOT_EXIST,
            format!("topic[{}] not exist, apply first please!", p.topic),
        ));
    };
    if !perm::is_readable(topic.perm) {
        return Err(error(
            response::NO_PERMISSION,
            format!("the topic[{}] pulling message is forbidden", p.topic),
        ));
    }
    if p.queue_id < 0 || p.queue_id >= topic.read_queue_nums {
        return Err(error(
            response::SYSTEM_ERROR,
            format!(
                "queueId[{}] is illegal, topic:[{}] topicConfig.readQueueNums:[{}]",
                p.queue_id, p.topic, topic.read_queue_nums
            ),
        ));
    }
    let (sub, selector) = subscription(broker, &group, req, &p)?;
    let mut filter = filter_of(&sub, selector);
    if broker.config.filter_support_retry {
        if let Some(group) = p.topic.strip_prefix(RETRY_GROUP_TOPIC_PREFIX) {
            filter = Arc::new(RetryTopicFilter {
                own: filter,
                by_topic: broker.consumer_filters.selectors_of_group(group),
            });
        }
    }
    let r = match u64::try_from(p.offset) {
        Ok(offset) => broker.store.get_messages(
            p.topic,
            p.queue_id,
            offset,
            p.max_msgs.max(1) as usize,
            filter.as_ref(),
        ),
        Err(_) => below_every_offset(broker, p.topic, p.queue_id),
    };
    // On a slave (offsetCheckInSlave=false) the store does not correct
    // offsets and a would-be OFFSET_MOVED sends the consumer back to the
    // group's broker (the master) instead (cluster.md §7.2).
    let slave_keeps_offset = broker.is_slave() && !broker.config.offset_check_in_slave;
    let mut next_begin_offset = r.next_begin_offset;
    if slave_keeps_offset
        && matches!(
            r.status,
            GetMessageStatus::NoMessageInQueue
                | GetMessageStatus::OffsetTooSmall
                | GetMessageStatus::OffsetOverflowBadly
                | GetMessageStatus::OffsetFoundNull
        )
    {
        next_begin_offset = p.offset.max(0) as u64;
    }
    let (mut code, name) = match r.status {
        GetMessageStatus::Found => (response::SUCCESS, "FOUND"),
        GetMessageStatus::NoMessageInQueue if p.offset != 0 => {
            (response::PULL_OFFSET_MOVED, "NO_MESSAGE_IN_QUEUE")
        }
        GetMessageStatus::NoMessageInQueue => (response::PULL_NOT_FOUND, "NO_MESSAGE_IN_QUEUE"),
        GetMessageStatus::OffsetTooSmall => (response::PULL_OFFSET_MOVED, "OFFSET_TOO_SMALL"),
        GetMessageStatus::OffsetOverflowOne => (response::PULL_NOT_FOUND, "OFFSET_OVERFLOW_ONE"),
        GetMessageStatus::OffsetOverflowBadly => {
            (response::PULL_OFFSET_MOVED, "OFFSET_OVERFLOW_BADLY")
        }
        GetMessageStatus::OffsetFoundNull => (response::PULL_NOT_FOUND, "OFFSET_FOUND_NULL"),
        GetMessageStatus::NoMatchedMessage => {
            (response::PULL_RETRY_IMMEDIATELY, "NO_MATCHED_MESSAGE")
        }
        GetMessageStatus::MessageWasRemoving => {
            (response::PULL_RETRY_IMMEDIATELY, "MESSAGE_WAS_REMOVING")
        }
    };
    if code == response::PULL_OFFSET_MOVED && !broker.is_slave() {
        record_offset_moved(broker, &p, next_begin_offset);
    }
    // The consumer's position is stored on the first pass only
    // (semantics.md §6.3), and only by a master: a slave's offsets are
    // copied from its master (cluster.md §3, §7.2).
    if first_pass
        && p.sys_flag & FLAG_COMMIT_OFFSET != 0
        && p.commit_offset >= 0
        && !broker.is_slave()
    {
        broker
            .offsets
            .commit(p.group, p.topic, p.queue_id, p.commit_offset);
    }
    if code == response::PULL_NOT_FOUND && first_pass && p.sys_flag & FLAG_SUSPEND != 0 {
        let hold = if broker.config.long_polling_enable {
            Duration::from_millis(p.suspend_ms.clamp(0, 3_600_000) as u64)
        } else {
            Duration::from_millis(broker.config.short_polling_time_mills)
        };
        // Nothing readable although the queue goes on past the offset
        // (OFFSET_FOUND_NULL: a damaged entry, a missing file). Waking at
        // the offset would answer at once and the consumer would pull the
        // same entry again in a loop; RocketMQ's hold service re-runs such
        // a pull at its next check (every 5 s). So: wake on a message past
        // the queue's end, and hold at most that long.
        let offset = p.offset.max(0) as u64;
        let (hold, wake_from) = if r.max_offset > offset {
            (hold.min(HOLD_CHECK_INTERVAL), r.max_offset)
        } else {
            (hold, offset)
        };
        return Ok(Pass::Suspend {
            filter,
            hold,
            wake_from,
        });
    }
    // suggestWhichBrokerId (cluster.md §7.1): with slaveReadEnable, the
    // group's slow-consumer broker when the consumer reads data likely out
    // of page cache, else the group's broker; without it, the master.
    let mut suggest = if broker.config.slave_read_enable && r.suggest_pull_from_slave {
        group.which_broker_when_consume_slowly
    } else if broker.config.slave_read_enable {
        group.broker_id
    } else {
        0
    };
    if code == response::PULL_OFFSET_MOVED && slave_keeps_offset {
        code = response::PULL_RETRY_IMMEDIATELY;
        suggest = group.broker_id;
    }
    let mut resp = RemotingCommand::response(code)
        .with_remark(name)
        .with_ext("suggestWhichBrokerId", suggest)
        .with_ext("nextBeginOffset", next_begin_offset)
        .with_ext("minOffset", r.min_offset)
        .with_ext("maxOffset", r.max_offset);
    if code == response::SUCCESS {
        let mut body = BytesMut::with_capacity(r.total_bytes);
        for m in &r.messages {
            body.extend_from_slice(m.as_bytes());
        }
        resp = resp.with_body(body.freeze());
    }
    Ok(Pass::Reply(resp))
}

/// Appends the OFFSET_MOVED_EVENT message of a PULL_OFFSET_MOVED answer
/// (semantics.md §6.4), for tools that watch consumers being moved. The
/// pull's answer does not wait for it; a failed append is only logged.
fn record_offset_moved(broker: &Broker, p: &PullRequest<'_>, offset_new: u64) {
    let body = serde_json::json!({
        "consumerGroup": p.group,
        "messageQueue": {
            "brokerName": broker.config.broker_name,
            "queueId": p.queue_id,
            "topic": p.topic,
        },
        "offsetNew": offset_new,
        "offsetRequest": p.offset,
    });
    let body = fastjson::to_compact(&body, &|_| false);
    let properties = record::serialize_properties([
        (property::KEYS, p.group),
        (property::DELAY, "0"),
        (property::TAGS, p.group),
    ]);
    let mut msg = MessageToStore::new(OFFSET_MOVED_EVENT, 0, body.as_bytes(), &properties);
    msg.born_timestamp = super::now_ms();
    msg.born_host = broker.store_host;
    msg.store_host = broker.store_host;
    msg.wait_for_flush = false;
    let store = broker.store.clone();
    tokio::spawn(async move {
        if let Err(e) = store.put_message_async(&msg).await {
            tracing::warn!("cannot record an offset moved event: {e}");
        }
    });
}

/// What RocketMQ's getMessage answers for a negative offset: it is below
/// the queue's min offset (OFFSET_TOO_SMALL, corrected to the min), unless
/// the queue is empty (NO_MESSAGE_IN_QUEUE, corrected to 0).
fn below_every_offset(broker: &Broker, topic: &str, queue_id: i32) -> GetMessageResult {
    let (min, max) = (
        broker.store.min_queue_offset(topic, queue_id),
        broker.store.max_queue_offset(topic, queue_id),
    );
    let (status, next_begin_offset) = if max == 0 {
        (GetMessageStatus::NoMessageInQueue, 0)
    } else {
        (GetMessageStatus::OffsetTooSmall, min)
    };
    GetMessageResult {
        status,
        messages: Vec::new(),
        next_begin_offset,
        min_offset: min,
        max_offset: max,
        suggest_pull_from_slave: false,
        total_bytes: 0,
    }
}

/// Wires the store's arrival notifications to long polling.
pub fn install_arrival_listener(broker: &Arc<Broker>) {
    let weak = Arc::downgrade(broker);
    broker.store.set_arrival_listener(Arc::new(move |a| {
        if let Some(b) = weak.upgrade() {
            b.long_polling.notify(
                a.topic,
                a.queue_id,
                a.queue_offset,
                a.tags_code,
                a.properties,
            );
        }
    }));
}

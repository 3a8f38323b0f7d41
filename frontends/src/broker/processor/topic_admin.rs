//! Administration: topics (UPDATE_AND_CREATE_TOPIC 17, DELETE_TOPIC_IN_BROKER
//! 215, GET_ALL_TOPIC_CONFIG 21), subscription groups (200, 201, 207),
//! broker info (GET_BROKER_RUNTIME_INFO 28, GET_BROKER_CONFIG 26), the
//! slave-sync dumps (GET_ALL_CONSUMER_OFFSET 43, GET_ALL_DELAY_OFFSET 45) and
//! CHECK_CLIENT_CONFIG 46 (remoting.md §7.10, semantics.md §8).

use std::collections::BTreeMap;

use super::{error, json_body, optional, required, required_i32, success, Reply};
use crate::broker::subscription_group::SubscriptionGroupConfig;
use crate::broker::topic_config::{self, TopicConfig};
use crate::broker::Broker;
use crate::remoting::codes::{request, response};
use crate::remoting::RemotingCommand;
use fastjson::as_string;

pub async fn handle(broker: &Broker, req: &RemotingCommand) -> Reply {
    match req.code {
        request::UPDATE_AND_CREATE_TOPIC => update_and_create_topic(broker, req).await,
        request::DELETE_TOPIC_IN_BROKER => delete_topic(broker, req).await,
        request::GET_ALL_TOPIC_CONFIG => {
            let body = fastjson::to_compact(&broker.topics.wrapper_value(), &|_| false);
            Ok(success().with_body(body))
        }
        request::GET_BROKER_RUNTIME_INFO => Ok(success().with_body(runtime_info(broker))),
        request::GET_BROKER_CONFIG => {
            let dv = broker.topics.data_version();
            Ok(success()
                .with_ext("version", dv.to_json())
                .with_body(broker.settings.render()))
        }
        request::GET_ALL_CONSUMER_OFFSET => Ok(success().with_body(broker.offsets.to_json(false))),
        // Java sends delayOffset.json's text; this is what it says (or is
        // about to say once the last deliveries are durable).
        request::GET_ALL_DELAY_OFFSET => Ok(success().with_body(broker.schedule.to_json(true))),
        request::GET_ALL_SUBSCRIPTIONGROUP_CONFIG => {
            let body = fastjson::to_compact(&broker.groups.wrapper_value(), &|_| false);
            Ok(success().with_body(body))
        }
        request::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP => {
            let v = json_body(req)?;
            let name = as_string(v.get("groupName")).unwrap_or_default();
            if name.is_empty() {
                return Err(error(response::SYSTEM_ERROR, "groupName is empty"));
            }
            broker
                .groups
                .upsert(SubscriptionGroupConfig::from_value(&name, &v));
            Ok(success())
        }
        request::DELETE_SUBSCRIPTIONGROUP => {
            let group = required(req, "groupName")?;
            broker.groups.delete(group);
            Ok(success())
        }
        request::CHECK_CLIENT_CONFIG => check_client_config(broker, req),
        other => Err(error(
            response::REQUEST_CODE_NOT_SUPPORTED,
            format!(" request type {other} not supported"),
        )),
    }
}

async fn update_and_create_topic(broker: &Broker, req: &RemotingCommand) -> Reply {
    let topic = required(req, "topic")?;
    topic_config::validate_topic_name(topic).map_err(|e| error(response::SYSTEM_ERROR, e))?;
    if topic_config::is_system_topic(topic, &broker.config) {
        return Err(error(
            response::SYSTEM_ERROR,
            format!("The topic[{topic}] is conflict with system topic."),
        ));
    }
    if broker.store.config().broker_role == engine::BrokerRole::Slave {
        return Err(error(
            response::SYSTEM_ERROR,
            "slave broker cannot create topics",
        ));
    }
    let queue_nums = |key: &str| {
        let n = required_i32(req, key)?;
        if n < 0 {
            return Err(error(
                response::SYSTEM_ERROR,
                format!("{key} {n} is negative"),
            ));
        }
        Ok(n)
    };
    let tc = TopicConfig {
        topic_name: topic.to_string(),
        read_queue_nums: queue_nums("readQueueNums")?,
        write_queue_nums: queue_nums("writeQueueNums")?,
        perm: required_i32(req, "perm")?,
        topic_filter_type: optional(req, "topicFilterType")
            .unwrap_or("SINGLE_TAG")
            .to_string(),
        topic_sys_flag: optional(req, "topicSysFlag")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0),
        order: super::java_bool(req, "order"),
    };
    broker.topics.upsert(tc);
    // Java registers synchronously after a topic update.
    broker.register_now().await;
    Ok(success())
}

async fn delete_topic(broker: &Broker, req: &RemotingCommand) -> Reply {
    let topic = required(req, "topic")?;
    if topic_config::is_system_topic(topic, &broker.config) {
        return Err(error(
            response::SYSTEM_ERROR,
            format!("The topic[{topic}] is conflict with system topic."),
        ));
    }
    if broker.store.config().broker_role == engine::BrokerRole::Slave {
        return Err(error(
            response::SYSTEM_ERROR,
            "slave broker cannot delete topics",
        ));
    }
    broker.topics.delete(topic);
    broker.offsets.remove_topic(topic);
    if let Err(e) = broker.store.delete_topic(topic).await {
        tracing::warn!(topic, "deleting the topic's consume queues failed: {e}");
    }
    Ok(success())
}

fn runtime_info(broker: &Broker) -> String {
    let store = &broker.store;
    let mut t = BTreeMap::new();
    t.insert("brokerVersion", "409".to_string());
    t.insert("brokerVersionDesc", "V4_9_8".to_string());
    t.insert("commitLogMinOffset", store.min_offset().to_string());
    t.insert("commitLogMaxOffset", store.max_offset().to_string());
    // Ours (RocketMQ has no such keys): commit log flushes that made new
    // bytes durable, and their summed time, for benchmarks.
    let flush = store.flush_stats();
    t.insert("commitLogFlushCount", flush.flushes.to_string());
    t.insert(
        "commitLogFlushTimeUs",
        (flush.flush_nanos / 1000).to_string(),
    );
    t.insert("bootTimestamp", broker.boot_timestamp.to_string());
    t.insert("brokerActive", "true".to_string());
    t.insert("putTps", "0".to_string());
    t.insert("getTransferedTps", "0".to_string());
    t.insert("msgPutTotalTodayNow", "0".to_string());
    t.insert("msgGetTotalTodayNow", "0".to_string());
    t.insert("dispatchBehindBytes", "0".to_string());
    t.insert("pageCacheLockTimeMills", "0".to_string());
    t.insert("earliestMessageTimeStamp", "0".to_string());
    t.insert("commitLogDiskRatio", "0.0".to_string());
    t.insert("consumeQueueDiskRatio", "0.0".to_string());
    t.insert(
        "runtime",
        format!("[ {} ms ]", super::now_ms() - broker.boot_timestamp),
    );
    serde_json::json!({ "table": t }).to_string()
}

/// CHECK_CLIENT_CONFIG (sent by Java consumers when they start): TAG
/// subscriptions are fine; SQL92 needs `enablePropertyFilter` and an
/// expression that compiles (else SUBSCRIPTION_PARSE_FAILED with the reason).
fn check_client_config(broker: &Broker, req: &RemotingCommand) -> Reply {
    let v = json_body(req)?;
    let Some(sub) = v.get("subscriptionData").filter(|s| !s.is_null()) else {
        return Ok(success());
    };
    let ty = as_string(sub.get("expressionType")).unwrap_or_default();
    if ty.is_empty() || ty.eq_ignore_ascii_case("TAG") {
        return Ok(success());
    }
    if !broker.config.enable_property_filter {
        return Err(error(
            response::SYSTEM_ERROR,
            format!("The broker does not support consumer to filter message by {ty}"),
        ));
    }
    let expr = as_string(sub.get("subString")).unwrap_or_default();
    if let Err(e) = broker.consumer_filters.compile(&ty, &expr) {
        tracing::warn!(expression = %expr, "client filter does not compile: {e}");
        return Err(error(response::SUBSCRIPTION_PARSE_FAILED, e.to_string()));
    }
    Ok(success())
}

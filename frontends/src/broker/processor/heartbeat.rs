//! Client management: HEART_BEAT (34), UNREGISTER_CLIENT (35),
//! GET_CONSUMER_LIST_BY_GROUP (38) (remoting.md §7.4–7.5, semantics.md §11).
//!
//! The heartbeat body is parsed leniently: enums as names or ordinals (C++),
//! `subVersion` as number or string, any array may be absent.

use std::time::Instant;

use serde_json::{json, Value};

use super::{error, json_body, optional, required, success, Reply};
use crate::broker::client_registry::{ClientChannel, ConsumerRegistration, SubscriptionData};
use crate::broker::topic_config::{perm, TopicConfig, RETRY_GROUP_TOPIC_PREFIX};
use crate::broker::Broker;
use crate::remoting::codes::{request, response};
use crate::remoting::{ConnectionContext, RemotingCommand};
use fastjson::{as_i64, as_string};

pub fn handle(broker: &Broker, ctx: &ConnectionContext, req: &RemotingCommand) -> Reply {
    match req.code {
        request::HEART_BEAT => heartbeat(broker, ctx, req),
        request::UNREGISTER_CLIENT => {
            let _client_id = required(req, "clientID")?;
            if let Some(group) = optional(req, "producerGroup") {
                broker.clients.unregister_producer(group, ctx.id());
            }
            if let Some(group) = optional(req, "consumerGroup") {
                let notify = broker
                    .groups
                    .get(group)
                    .map(|g| g.notify_consumer_ids_changed_enable)
                    .unwrap_or(true);
                broker.clients.unregister_consumer(group, ctx.id(), notify);
            }
            Ok(success())
        }
        _ => {
            let group = required(req, "consumerGroup")?;
            let ids = broker.clients.consumer_ids(group);
            if ids.is_empty() {
                return Err(error(
                    response::SYSTEM_ERROR,
                    format!("no consumer for this group, {group}"),
                ));
            }
            Ok(success().with_body(json!({ "consumerIdList": ids }).to_string()))
        }
    }
}

/// An enum given by name or by ordinal.
fn enum_name(v: Option<&Value>, names: &[&str]) -> String {
    match v {
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|i| names.get(i as usize))
            .map(|s| s.to_string())
            .unwrap_or_default(),
        Some(Value::String(s)) => match s.parse::<usize>() {
            Ok(i) => names.get(i).map(|s| s.to_string()).unwrap_or_default(),
            Err(_) => s.clone(),
        },
        _ => String::new(),
    }
}

const CONSUME_TYPES: &[&str] = &["CONSUME_ACTIVELY", "CONSUME_PASSIVELY"];
const MESSAGE_MODELS: &[&str] = &["BROADCASTING", "CLUSTERING"];
const CONSUME_FROM: &[&str] = &[
    "CONSUME_FROM_LAST_OFFSET",
    "CONSUME_FROM_LAST_OFFSET_AND_FROM_MIN_WHEN_BOOT_FIRST",
    "CONSUME_FROM_MIN_OFFSET",
    "CONSUME_FROM_MAX_OFFSET",
    "CONSUME_FROM_FIRST_OFFSET",
    "CONSUME_FROM_TIMESTAMP",
];

/// One `subscriptionDataSet` entry.
pub fn parse_subscription(v: &Value) -> Option<SubscriptionData> {
    let topic = v.get("topic").and_then(Value::as_str)?.to_string();
    let sub_string = as_string(v.get("subString")).unwrap_or_else(|| "*".to_string());
    let expression_type = as_string(v.get("expressionType"));
    let sub_version = as_i64(v.get("subVersion")).unwrap_or(0);
    let mut sub = SubscriptionData::from_expression(
        &topic,
        &sub_string,
        expression_type.as_deref(),
        sub_version,
    );
    // Trust the client's tag list and codes when it sent them.
    if let Some(Value::Array(tags)) = v.get("tagsSet") {
        let tags: Vec<String> = tags
            .iter()
            .filter_map(|t| t.as_str().map(|s| s.trim().to_string()))
            .filter(|t| !t.is_empty())
            .collect();
        if !tags.is_empty() {
            sub.tags_set = tags.into_iter().collect();
        }
    }
    let codes = v.get("codeSet").or_else(|| v.get("codesSet"));
    if let Some(Value::Array(codes)) = codes {
        let codes: Vec<i32> = codes
            .iter()
            .filter_map(|c| as_i64(Some(c)))
            .map(|c| c as i32)
            .collect();
        if !codes.is_empty() {
            sub.codes_set = codes.into_iter().collect();
        }
    }
    sub.class_filter_mode = v
        .get("classFilterMode")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Some(sub)
}

fn heartbeat(broker: &Broker, ctx: &ConnectionContext, req: &RemotingCommand) -> Reply {
    let v = json_body(req)?;
    let client_id = as_string(v.get("clientID")).unwrap_or_default();
    let channel = ClientChannel {
        ctx: ctx.clone(),
        client_id: client_id.clone(),
        language: req.language,
        version: req.version,
        last_update: Instant::now(),
    };
    if let Some(Value::Array(consumers)) = v.get("consumerDataSet") {
        let consumers: Vec<(&str, &Value)> = consumers
            .iter()
            .filter_map(|c| Some((c.get("groupName").and_then(Value::as_str)?, c)))
            .collect();
        // Groups and their retry topics are created for the whole heartbeat
        // at once: each table is then written once, not once per group (a
        // heartbeat may name thousands).
        let names: Vec<&str> = consumers.iter().map(|(group, _)| *group).collect();
        let configs = broker.groups.find_or_create_all(&names);
        let mut retry_topics = Vec::new();
        for ((group, c), g) in consumers.iter().zip(&configs) {
            let Some(g) = g else { continue };
            let retry = format!("{RETRY_GROUP_TOPIC_PREFIX}{group}");
            if broker.topics.contains(&retry) {
                continue;
            }
            let mut tc = TopicConfig::new(
                &retry,
                g.retry_queue_nums.max(1),
                g.retry_queue_nums.max(1),
                perm::READ | perm::WRITE,
            );
            // Java: a unit-mode consumer's retry topic carries the unit flag.
            if c.get("unitMode").and_then(Value::as_bool).unwrap_or(false) {
                tc.topic_sys_flag = 1;
            }
            retry_topics.push(tc);
        }
        broker.topics.create_internal_all(retry_topics);
        for ((group, c), g) in consumers.into_iter().zip(configs) {
            let notify = g.is_none_or(|g| g.notify_consumer_ids_changed_enable);
            let subscriptions: Vec<SubscriptionData> = match c.get("subscriptionDataSet") {
                Some(Value::Array(subs)) => subs.iter().filter_map(parse_subscription).collect(),
                _ => Vec::new(),
            };
            // SQL92 subscriptions are compiled and registered; one that does
            // not compile is logged and left out, the heartbeat still
            // succeeds (RocketMQ's ConsumerFilterManager).
            broker.consumer_filters.register_all(group, &subscriptions);
            let reg = ConsumerRegistration {
                group: group.to_string(),
                consume_type: enum_name(c.get("consumeType"), CONSUME_TYPES),
                message_model: enum_name(c.get("messageModel"), MESSAGE_MODELS),
                consume_from_where: enum_name(c.get("consumeFromWhere"), CONSUME_FROM),
                subscriptions,
            };
            broker
                .clients
                .register_consumer(reg, channel.clone(), notify);
        }
    }
    if let Some(Value::Array(producers)) = v.get("producerDataSet") {
        for p in producers {
            if let Some(group) = p.get("groupName").and_then(Value::as_str) {
                broker.clients.register_producer(group, channel.clone());
            }
        }
    }
    Ok(success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpp_style_subscription() {
        let v: Value = serde_json::from_str(
            r#"{"topic":"T","subString":"TagA || TagB","tagsSet":["TagA","TagB"],"subVersion":"1700000000000"}"#,
        )
        .unwrap();
        let s = parse_subscription(&v).unwrap();
        assert_eq!(s.sub_version, 1_700_000_000_000);
        assert_eq!(s.expression_type, "TAG");
        assert!(s
            .codes_set
            .contains(&engine::record::java_string_hash("TagA")));
        assert_eq!(
            enum_name(Some(&Value::from(1)), MESSAGE_MODELS),
            "CLUSTERING"
        );
    }
}

//! LOCK_BATCH_MQ (41) and UNLOCK_BATCH_MQ (42) for ordered consumers
//! (remoting.md §7.10, semantics.md §9).

use serde_json::{json, Value};

use super::{error, json_body, success, Reply};
use crate::broker::rebalance_lock::MessageQueue;
use crate::broker::Broker;
use crate::remoting::codes::{request, response};
use crate::remoting::RemotingCommand;

struct LockBody {
    group: String,
    client_id: String,
    mqs: Vec<MessageQueue>,
}

fn parse(req: &RemotingCommand) -> Result<LockBody, RemotingCommand> {
    let v = json_body(req)?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let group = s("consumerGroup");
    let client_id = s("clientId");
    if group.is_empty() || client_id.is_empty() {
        return Err(error(
            response::SYSTEM_ERROR,
            "lock body needs consumerGroup and clientId",
        ));
    }
    let mut mqs = Vec::new();
    if let Some(Value::Array(items)) = v.get("mqSet") {
        for m in items {
            let topic = m.get("topic").and_then(Value::as_str).unwrap_or("");
            let broker_name = m.get("brokerName").and_then(Value::as_str).unwrap_or("");
            let queue_id = fastjson::as_i64(m.get("queueId")).unwrap_or(-1);
            if topic.is_empty() || queue_id < 0 {
                continue;
            }
            mqs.push(MessageQueue {
                topic: topic.to_string(),
                broker_name: broker_name.to_string(),
                queue_id: queue_id as i32,
            });
        }
    }
    Ok(LockBody {
        group,
        client_id,
        mqs,
    })
}

pub fn handle(broker: &Broker, req: &RemotingCommand) -> Reply {
    let body = parse(req)?;
    if req.code == request::LOCK_BATCH_MQ {
        let granted = broker
            .locks
            .try_lock_batch(&body.group, &body.mqs, &body.client_id);
        let body = json!({ "lockOKMQSet": granted }).to_string();
        Ok(success().with_body(body))
    } else {
        broker
            .locks
            .unlock_batch(&body.group, &body.mqs, &body.client_id);
        Ok(success())
    }
}

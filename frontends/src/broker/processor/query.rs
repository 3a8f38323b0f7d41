//! QUERY_MESSAGE (12) by key and VIEW_MESSAGE_BY_ID (33) by commit log
//! offset (remoting.md §7.3). Bodies are whole records, byte for byte.

use bytes::BytesMut;

use super::{error, java_bool, required, required_i32, required_i64, success, Reply};
use crate::broker::Broker;
use crate::remoting::codes::{request, response};
use crate::remoting::RemotingCommand;

pub fn handle(broker: &Broker, req: &RemotingCommand) -> Reply {
    if req.code == request::VIEW_MESSAGE_BY_ID {
        return view_by_id(broker, req);
    }
    let topic = required(req, "topic")?;
    let key = required(req, "key")?;
    let mut max_num = required_i32(req, "maxNum")?.max(0) as usize;
    let begin = required_i64(req, "beginTimestamp")?;
    let end = required_i64(req, "endTimestamp")?;
    let store_cfg = broker.store.config();
    if java_bool(req, "_UNIQUE_KEY_QUERY") {
        max_num = store_cfg.default_query_max_num as usize;
    }
    max_num = max_num.min(store_cfg.max_msgs_num_batch as usize);
    let records = broker.store.query_by_key(topic, key, max_num, begin, end);
    if records.is_empty() {
        return Err(error(
            response::QUERY_NOT_FOUND,
            "can not find message, maybe time range not correct",
        ));
    }
    let mut body = BytesMut::new();
    for r in &records {
        body.extend_from_slice(r.as_bytes());
    }
    let (timestamp, phy_offset) = broker.store.index_last_update();
    Ok(success()
        .with_ext("indexLastUpdateTimestamp", timestamp)
        .with_ext("indexLastUpdatePhyoffset", phy_offset)
        .with_body(body.freeze()))
}

fn view_by_id(broker: &Broker, req: &RemotingCommand) -> Reply {
    let offset = required_i64(req, "offset")?;
    // The offset comes from a client-decoded offsetMsgId: only a record that
    // decodes as a message and names this very offset is one (RocketMQ
    // returns whatever bytes a size read there covers).
    let record = u64::try_from(offset)
        .ok()
        .and_then(|o| broker.store.read_record(o))
        .filter(|rec| {
            matches!(
                engine::record::decode(rec.as_bytes(), false),
                engine::record::Decoded::Message(v) if v.physical_offset == offset
            )
        });
    match record {
        Some(rec) => Ok(success().with_body(bytes::Bytes::copy_from_slice(rec.as_bytes()))),
        None => Err(error(
            response::SYSTEM_ERROR,
            format!("can not find message by the offset, {offset}"),
        )),
    }
}

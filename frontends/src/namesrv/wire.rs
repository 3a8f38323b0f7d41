//! The name server's JSON bodies, as Java's fastjson writes and reads them
//! (remoting.md §7.11).
//!
//! Input: RegisterBrokerBody / TopicConfigSerializeWrapper / DataVersion,
//! parsed leniently — fastjson's unquoted integer map keys (`{0:"a"}`) are
//! accepted, numbers may be strings, unknown fields are ignored.
//!
//! Output: TopicRouteData and ClusterInfo in either dialect: fastjson's
//! default (integer map keys unquoted, what clients older than 4.9.4 get) or
//! standard JSON (keys quoted and sorted, non-ASCII escaped). Field order is
//! alphabetical, as fastjson writes beans.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, BytesMut};
use serde_json::Value;

use crate::remoting::json_header;

use super::route_table::{BrokerData, DataVersion, QueueData, TopicRouteData};

/// A body that is not the JSON we expect.
#[derive(Debug, thiserror::Error)]
#[error("malformed JSON body: {0}")]
pub struct BodyError(pub String);

/// One topic of a registration (TopicConfig; only what routes need).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    pub topic_name: String,
    pub read_queue_nums: i32,
    pub write_queue_nums: i32,
    pub perm: i32,
    pub topic_sys_flag: i32,
}

/// TopicConfigSerializeWrapper: the broker's topics and their version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicConfigWrapper {
    pub data_version: DataVersion,
    pub topics: Vec<TopicConfig>,
}

/// RegisterBrokerBody.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterBrokerBody {
    pub topic_config_wrapper: TopicConfigWrapper,
    pub filter_server_list: Vec<String>,
}

/// Parses JSON as fastjson would accept it: standard JSON, or JSON whose
/// object keys are unquoted (`{0:"x"}`).
pub fn parse_lenient(body: &[u8]) -> Result<Value, BodyError> {
    fastjson::parse(body).map_err(|e| BodyError(e.to_string()))
}

fn as_i32(v: Option<&Value>, default: i32) -> i32 {
    fastjson::as_i64(v).map(|n| n as i32).unwrap_or(default)
}

impl DataVersion {
    /// From `{"counter":N,"timestamp":T}` (extra fields ignored).
    pub fn from_value(v: &Value) -> DataVersion {
        DataVersion {
            timestamp: fastjson::as_i64(v.get("timestamp")).unwrap_or(0),
            counter: fastjson::as_i64(v.get("counter")).unwrap_or(0),
        }
    }

    pub fn to_json(&self) -> String {
        format!(
            "{{\"counter\":{},\"timestamp\":{}}}",
            self.counter, self.timestamp
        )
    }
}

impl TopicConfigWrapper {
    /// From a TopicConfigSerializeWrapper object.
    pub fn from_value(v: &Value) -> TopicConfigWrapper {
        let data_version = v
            .get("dataVersion")
            .map(DataVersion::from_value)
            .unwrap_or_default();
        let mut topics = Vec::new();
        if let Some(Value::Object(table)) = v.get("topicConfigTable") {
            for (name, tc) in table {
                let topic_name = match tc.get("topicName") {
                    Some(Value::String(s)) if !s.is_empty() => s.clone(),
                    _ => name.clone(),
                };
                topics.push(TopicConfig {
                    topic_name,
                    // Java's TopicConfig defaults: 16 queues, perm RW.
                    read_queue_nums: as_i32(tc.get("readQueueNums"), 16),
                    write_queue_nums: as_i32(tc.get("writeQueueNums"), 16),
                    perm: as_i32(tc.get("perm"), 6),
                    topic_sys_flag: as_i32(tc.get("topicSysFlag"), 0),
                });
            }
        }
        TopicConfigWrapper {
            data_version,
            topics,
        }
    }
}

impl RegisterBrokerBody {
    /// Parses a registration body. Brokers older than V3_0_11 (`version` < 37)
    /// send a bare TopicConfigSerializeWrapper.
    pub fn parse(body: &[u8], request_version: i32) -> Result<RegisterBrokerBody, BodyError> {
        let v = parse_lenient(body)?;
        if !v.is_object() {
            return Err(BodyError("registration body is not an object".into()));
        }
        if request_version < crate::remoting::command::version::V3_0_11 {
            return Ok(RegisterBrokerBody {
                topic_config_wrapper: TopicConfigWrapper::from_value(&v),
                filter_server_list: Vec::new(),
            });
        }
        let wrapper = v
            .get("topicConfigSerializeWrapper")
            .map(TopicConfigWrapper::from_value)
            .unwrap_or_default();
        let filter_server_list = string_list(v.get("filterServerList"));
        Ok(RegisterBrokerBody {
            topic_config_wrapper: wrapper,
            filter_server_list,
        })
    }

    /// Parses a body sent with `compressed=true` (Java brokers with
    /// `compressedRegister=true`, remoting.md §7.11): a zlib stream of the
    /// DataVersion JSON, the topic count, one `name readQueueNums
    /// writeQueueNums perm topicFilterType` line per topic (topicSysFlag is
    /// not sent: 0) and the filter server list JSON, each length-prefixed
    /// (i32). The stream may inflate to at most [`MAX_INFLATED_REGISTER_BODY`]
    /// bytes, and no declared length is trusted before its bytes are there.
    pub fn parse_compressed(body: &[u8]) -> Result<RegisterBrokerBody, BodyError> {
        use std::io::Read;
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(body)
            .take(MAX_INFLATED_REGISTER_BODY + 1)
            .read_to_end(&mut raw)
            .map_err(|e| BodyError(format!("compressed registration body: {e}")))?;
        if raw.len() as u64 > MAX_INFLATED_REGISTER_BODY {
            return Err(BodyError(format!(
                "compressed registration body inflates past {MAX_INFLATED_REGISTER_BODY} bytes"
            )));
        }
        let mut r = Chunks { rest: &raw };
        let data_version = DataVersion::from_value(&parse_lenient(r.chunk("dataVersion")?)?);
        let count = r.i32("topic count")?;
        let mut topics = Vec::new();
        for _ in 0..count.max(0) {
            let line = r.chunk("topic config")?;
            let line = std::str::from_utf8(line)
                .map_err(|_| BodyError("topic config is not UTF-8".into()))?;
            let fields: Vec<&str> = line.split(' ').collect();
            // 5.x brokers append the topic's attributes JSON: ignored.
            let [name, read, write, perm, _filter_type, ..] = fields[..] else {
                return Err(BodyError(format!("malformed topic config `{line}`")));
            };
            let num = |v: &str| {
                v.parse::<i32>()
                    .map_err(|_| BodyError(format!("malformed topic config `{line}`")))
            };
            topics.push(TopicConfig {
                topic_name: name.to_string(),
                read_queue_nums: num(read)?,
                write_queue_nums: num(write)?,
                perm: num(perm)?,
                topic_sys_flag: 0,
            });
        }
        // Java logs an unparsable filter server list and registers without one.
        let filter_server_list =
            string_list(parse_lenient(r.chunk("filterServerList")?).ok().as_ref());
        Ok(RegisterBrokerBody {
            topic_config_wrapper: TopicConfigWrapper {
                data_version,
                topics,
            },
            filter_server_list,
        })
    }

    /// Encodes as a Java broker sends it (standard JSON).
    pub fn to_json(&self) -> String {
        let mut table = serde_json::Map::new();
        for t in &self.topic_config_wrapper.topics {
            table.insert(
                t.topic_name.clone(),
                serde_json::json!({
                    "order": false,
                    "perm": t.perm,
                    "readQueueNums": t.read_queue_nums,
                    "topicFilterType": "SINGLE_TAG",
                    "topicName": t.topic_name,
                    "topicSysFlag": t.topic_sys_flag,
                    "writeQueueNums": t.write_queue_nums,
                }),
            );
        }
        let dv = &self.topic_config_wrapper.data_version;
        serde_json::json!({
            "filterServerList": self.filter_server_list,
            "topicConfigSerializeWrapper": {
                "dataVersion": {"counter": dv.counter, "timestamp": dv.timestamp},
                "topicConfigTable": table,
            }
        })
        .to_string()
    }
}

/// The strings of a JSON array (a filter server list); anything else is empty.
fn string_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// Most bytes a compressed registration body may inflate to: the largest
/// frame the name server takes by default (a topic takes about 40 bytes).
pub const MAX_INFLATED_REGISTER_BODY: u64 = 16 << 20;

/// The i32-length-prefixed parts of an inflated compressed registration.
struct Chunks<'a> {
    rest: &'a [u8],
}

impl<'a> Chunks<'a> {
    fn i32(&mut self, what: &str) -> Result<i32, BodyError> {
        let Some((head, rest)) = self.rest.split_first_chunk::<4>() else {
            return Err(BodyError(format!(
                "compressed registration body ends before the {what}"
            )));
        };
        self.rest = rest;
        Ok(i32::from_be_bytes(*head))
    }

    fn chunk(&mut self, what: &str) -> Result<&'a [u8], BodyError> {
        let len = self.i32(what)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&n| n <= self.rest.len())
            .ok_or_else(|| {
                BodyError(format!(
                    "compressed registration body: {what} of {len} bytes, {} left",
                    self.rest.len()
                ))
            })?;
        let (chunk, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(chunk)
    }
}

/// Which JSON dialect to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// fastjson default: integer map keys unquoted.
    Fastjson,
    /// Standard JSON: every key quoted, non-ASCII escaped.
    Standard,
}

struct Writer {
    buf: BytesMut,
    dialect: Dialect,
}

impl Writer {
    fn new(dialect: Dialect) -> Self {
        Writer {
            buf: BytesMut::with_capacity(512),
            dialect,
        }
    }
    fn raw(&mut self, s: &str) {
        self.buf.put_slice(s.as_bytes());
    }
    fn string(&mut self, s: &str) {
        json_header::put_json_string(&mut self.buf, s, self.dialect == Dialect::Standard);
    }
    fn int_key(&mut self, k: i64) {
        match self.dialect {
            Dialect::Fastjson => self.raw(&k.to_string()),
            Dialect::Standard => self.raw(&format!("\"{k}\"")),
        }
    }
    fn broker_data(&mut self, b: &BrokerData) {
        self.raw("{\"brokerAddrs\":{");
        for (i, (id, addr)) in b.broker_addrs.iter().enumerate() {
            if i > 0 {
                self.raw(",");
            }
            self.int_key(*id);
            self.raw(":");
            self.string(addr);
        }
        self.raw("},\"brokerName\":");
        self.string(&b.broker_name);
        self.raw(",\"cluster\":");
        self.string(&b.cluster);
        self.raw("}");
    }
    fn queue_data(&mut self, q: &QueueData) {
        self.raw("{\"brokerName\":");
        self.string(&q.broker_name);
        self.raw(&format!(
            ",\"perm\":{},\"readQueueNums\":{},\"topicSysFlag\":{},\"writeQueueNums\":{}}}",
            q.perm, q.read_queue_nums, q.topic_sys_flag, q.write_queue_nums
        ));
    }
    fn finish(self) -> bytes::Bytes {
        self.buf.freeze()
    }
}

/// TopicRouteData as GET_ROUTEINFO_BY_TOPIC returns it.
pub fn topic_route_json(route: &TopicRouteData, dialect: Dialect) -> bytes::Bytes {
    let mut w = Writer::new(dialect);
    w.raw("{\"brokerDatas\":[");
    for (i, b) in route.broker_datas.iter().enumerate() {
        if i > 0 {
            w.raw(",");
        }
        w.broker_data(b);
    }
    w.raw("],\"filterServerTable\":{");
    for (i, (addr, list)) in route.filter_server_table.iter().enumerate() {
        if i > 0 {
            w.raw(",");
        }
        w.string(addr);
        w.raw(":[");
        for (j, s) in list.iter().enumerate() {
            if j > 0 {
                w.raw(",");
            }
            w.string(s);
        }
        w.raw("]");
    }
    w.raw("}");
    if let Some(conf) = &route.order_topic_conf {
        w.raw(",\"orderTopicConf\":");
        w.string(conf);
    }
    w.raw(",\"queueDatas\":[");
    for (i, q) in route.queue_datas.iter().enumerate() {
        if i > 0 {
            w.raw(",");
        }
        w.queue_data(q);
    }
    w.raw("]}");
    w.finish()
}

/// ClusterInfo (GET_BROKER_CLUSTER_INFO): always fastjson's dialect.
pub fn cluster_info_json(
    brokers: &BTreeMap<String, BrokerData>,
    clusters: &BTreeMap<String, BTreeSet<String>>,
) -> bytes::Bytes {
    let mut w = Writer::new(Dialect::Fastjson);
    w.raw("{\"brokerAddrTable\":{");
    for (i, (name, b)) in brokers.iter().enumerate() {
        if i > 0 {
            w.raw(",");
        }
        w.string(name);
        w.raw(":");
        w.broker_data(b);
    }
    w.raw("},\"clusterAddrTable\":{");
    for (i, (cluster, names)) in clusters.iter().enumerate() {
        if i > 0 {
            w.raw(",");
        }
        w.string(cluster);
        w.raw(":[");
        for (j, n) in names.iter().enumerate() {
            if j > 0 {
                w.raw(",");
            }
            w.string(n);
        }
        w.raw("]");
    }
    w.raw("}}");
    w.finish()
}

/// `{"topicList":[…]}`.
pub fn topic_list_json<'a>(topics: impl Iterator<Item = &'a String>) -> bytes::Bytes {
    let list: Vec<&String> = topics.collect();
    bytes::Bytes::from(serde_json::json!({ "topicList": list }).to_string())
}

/// KVTable `{"table":{"k":"v"}}`.
pub fn kv_table_json(table: &BTreeMap<String, String>) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::json!({ "table": table }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_body_round_trips() {
        let body = RegisterBrokerBody {
            topic_config_wrapper: TopicConfigWrapper {
                data_version: DataVersion {
                    timestamp: 1700000000000,
                    counter: 3,
                },
                topics: vec![TopicConfig {
                    topic_name: "T".into(),
                    read_queue_nums: 4,
                    write_queue_nums: 8,
                    perm: 6,
                    topic_sys_flag: 0,
                }],
            },
            filter_server_list: vec![],
        };
        let parsed = RegisterBrokerBody::parse(body.to_json().as_bytes(), 409).unwrap();
        assert_eq!(parsed, body);
    }
}

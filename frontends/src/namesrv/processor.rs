//! The name server's request processors (remoting.md §7.11, cluster.md §2):
//! decode the request header, apply it to the [`RouteTable`] or the KV
//! config, build the answer. All of them are synchronous and cheap, so they
//! run inline on the connection's task.
//!
//! Deliberate deviation: Java's name server sends nothing for a request code
//! it does not know (the caller waits for its timeout); we answer
//! REQUEST_CODE_NOT_SUPPORTED at once, like the broker does — no client
//! depends on the silence, and admin tools fail fast instead of hanging.

use std::sync::Arc;

use crate::remoting::codes::{request, response};
use crate::remoting::command::version;
use crate::remoting::{ConnectionContext, RemotingCommand, RequestHandler};

use super::kv_config::{KvConfig, NAMESPACE_ORDER_TOPIC_CONFIG};
use super::route_table::{DataVersion, Registration, RouteTable};
use super::wire::{self, Dialect, RegisterBrokerBody};

/// The name server's [`RequestHandler`].
pub struct NamesrvProcessor {
    pub(crate) routes: Arc<RouteTable>,
    pub(crate) kv: Arc<KvConfig>,
    pub(crate) order_message_enable: bool,
}

impl RequestHandler for NamesrvProcessor {
    async fn handle(
        &self,
        ctx: &ConnectionContext,
        request: RemotingCommand,
    ) -> Option<RemotingCommand> {
        Some(self.process(ctx, &request).unwrap_or_else(|err| err))
    }

    fn on_closed(&self, ctx: &ConnectionContext) {
        self.routes.on_connection_closed(ctx.id());
    }
}

/// A finished error answer.
type Answer = Result<RemotingCommand, RemotingCommand>;

fn required<'a>(req: &'a RemotingCommand, key: &str) -> Result<&'a str, RemotingCommand> {
    req.ext(key).ok_or_else(|| {
        RemotingCommand::response_with_remark(
            response::SYSTEM_ERROR,
            format!("the custom field <{key}> is null"),
        )
    })
}

fn required_i64(req: &RemotingCommand, key: &str) -> Result<i64, RemotingCommand> {
    let v = required(req, key)?;
    v.trim().parse().map_err(|_| {
        RemotingCommand::response_with_remark(
            response::SYSTEM_ERROR,
            format!("the custom field <{key}> is not a number: {v}"),
        )
    })
}

/// Java `Boolean.parseBoolean`: only case-insensitive "true" is true.
fn flag(req: &RemotingCommand, key: &str) -> bool {
    req.ext(key).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

impl NamesrvProcessor {
    fn process(&self, ctx: &ConnectionContext, req: &RemotingCommand) -> Answer {
        match req.code {
            request::REGISTER_BROKER => self.register_broker(ctx, req),
            request::UNREGISTER_BROKER => self.unregister_broker(req),
            request::GET_ROUTEINFO_BY_TOPIC => self.route_by_topic(req),
            request::GET_BROKER_CLUSTER_INFO => {
                let (brokers, clusters) = self.routes.cluster_info();
                Ok(RemotingCommand::response(response::SUCCESS)
                    .with_body(wire::cluster_info_json(&brokers, &clusters)))
            }
            request::GET_ALL_TOPIC_LIST_FROM_NAMESERVER => {
                let topics = self.routes.topics();
                Ok(RemotingCommand::response(response::SUCCESS)
                    .with_body(wire::topic_list_json(topics.iter())))
            }
            request::WIPE_WRITE_PERM_OF_BROKER | request::ADD_WRITE_PERM_OF_BROKER => {
                let name = required(req, "brokerName")?;
                let add = req.code == request::ADD_WRITE_PERM_OF_BROKER;
                let n = self.routes.change_write_perm(name, add);
                tracing::info!(
                    broker = name,
                    topics = n,
                    add,
                    "changed write permission of broker"
                );
                let key = if add {
                    "addTopicCount"
                } else {
                    "wipeTopicCount"
                };
                Ok(RemotingCommand::response(response::SUCCESS).with_ext(key, n))
            }
            request::DELETE_TOPIC_IN_NAMESRV => {
                let topic = required(req, "topic")?;
                self.routes
                    .delete_topic(topic, req.ext("clusterName").filter(|c| !c.is_empty()));
                Ok(RemotingCommand::response(response::SUCCESS))
            }
            request::QUERY_DATA_VERSION => self.query_data_version(req),
            request::PUT_KV_CONFIG => {
                let ns = required(req, "namespace")?;
                let key = required(req, "key")?;
                let value = required(req, "value")?;
                self.kv.put(ns, key, value);
                Ok(RemotingCommand::response(response::SUCCESS))
            }
            request::GET_KV_CONFIG => {
                let ns = required(req, "namespace")?;
                let key = required(req, "key")?;
                match self.kv.get(ns, key) {
                    Some(v) => {
                        Ok(RemotingCommand::response(response::SUCCESS).with_ext("value", v))
                    }
                    None => Ok(RemotingCommand::response_with_remark(
                        response::QUERY_NOT_FOUND,
                        format!("No config item, Namespace: {ns} Key: {key}"),
                    )),
                }
            }
            request::DELETE_KV_CONFIG => {
                let ns = required(req, "namespace")?;
                let key = required(req, "key")?;
                self.kv.delete(ns, key);
                Ok(RemotingCommand::response(response::SUCCESS))
            }
            request::GET_KVLIST_BY_NAMESPACE => {
                let ns = required(req, "namespace")?;
                let table = self.kv.namespace(ns);
                if table.is_empty() {
                    Ok(RemotingCommand::response_with_remark(
                        response::QUERY_NOT_FOUND,
                        format!("No config item, Namespace: {ns}"),
                    ))
                } else {
                    Ok(RemotingCommand::response(response::SUCCESS)
                        .with_body(wire::kv_table_json(&table)))
                }
            }
            code => {
                tracing::debug!(code, peer = %ctx.peer_addr(), "request code not supported by the name server");
                Ok(RemotingCommand::response_with_remark(
                    response::REQUEST_CODE_NOT_SUPPORTED,
                    format!(" request type {code} not supported"),
                ))
            }
        }
    }

    fn register_broker(&self, ctx: &ConnectionContext, req: &RemotingCommand) -> Answer {
        let broker_name = required(req, "brokerName")?;
        let broker_addr = required(req, "brokerAddr")?;
        let cluster_name = required(req, "clusterName")?;
        let ha_server_addr = req.ext("haServerAddr").unwrap_or_default();
        let broker_id = required_i64(req, "brokerId")?;
        let crc = req
            .ext("bodyCrc32")
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(0);
        if crc != 0 && !req.body.is_empty() {
            let actual = (crc32fast::hash(&req.body) & 0x7FFF_FFFF) as i64;
            if actual != crc {
                tracing::warn!(
                    broker = broker_name,
                    addr = broker_addr,
                    "registration body crc32 mismatch"
                );
                return Err(RemotingCommand::response_with_remark(
                    response::SYSTEM_ERROR,
                    "crc32 not match",
                ));
            }
        }
        let body = if req.body.is_empty() {
            RegisterBrokerBody::default()
        } else if flag(req, "compressed") {
            // Java brokers with compressedRegister=true.
            RegisterBrokerBody::parse_compressed(&req.body).map_err(|e| {
                tracing::warn!(broker = broker_name, addr = broker_addr, "{e}");
                RemotingCommand::response_with_remark(response::SYSTEM_ERROR, e.to_string())
            })?
        } else {
            RegisterBrokerBody::parse(&req.body, req.version).map_err(|e| {
                RemotingCommand::response_with_remark(response::SYSTEM_ERROR, e.to_string())
            })?
        };
        let result = self.routes.register(
            Registration {
                cluster_name: cluster_name.to_string(),
                broker_addr: broker_addr.to_string(),
                broker_name: broker_name.to_string(),
                broker_id,
                ha_server_addr: ha_server_addr.to_string(),
                topic_config: body.topic_config_wrapper,
                filter_server_list: body.filter_server_list,
            },
            Some(ctx.clone()),
        );
        let mut resp = RemotingCommand::response(response::SUCCESS);
        if let Some(master) = result.master_addr {
            resp.ext_fields.insert("masterAddr", master);
        }
        if let Some(ha) = result.ha_server_addr {
            resp.ext_fields.insert("haServerAddr", ha);
        }
        let order = self.kv.namespace(NAMESPACE_ORDER_TOPIC_CONFIG);
        if !order.is_empty() {
            resp.body = wire::kv_table_json(&order);
        }
        Ok(resp)
    }

    fn unregister_broker(&self, req: &RemotingCommand) -> Answer {
        let broker_name = required(req, "brokerName")?;
        let broker_addr = required(req, "brokerAddr")?;
        let cluster_name = required(req, "clusterName")?;
        let broker_id = required_i64(req, "brokerId")?;
        self.routes
            .unregister(cluster_name, broker_addr, broker_name, broker_id);
        Ok(RemotingCommand::response(response::SUCCESS))
    }

    fn route_by_topic(&self, req: &RemotingCommand) -> Answer {
        let topic = required(req, "topic")?;
        let Some(mut route) = self.routes.route(topic) else {
            return Ok(RemotingCommand::response_with_remark(
                response::TOPIC_NOT_EXIST,
                format!(
                    "No topic route info in name server for the topic: {topic}\nSee http://rocketmq.apache.org/docs/faq/ for further details."
                ),
            ));
        };
        if self.order_message_enable {
            route.order_topic_conf = self.kv.get(NAMESPACE_ORDER_TOPIC_CONFIG, topic);
        }
        let dialect = if req.version >= version::V4_9_4 || flag(req, "acceptStandardJsonOnly") {
            Dialect::Standard
        } else {
            Dialect::Fastjson
        };
        Ok(RemotingCommand::response(response::SUCCESS)
            .with_body(wire::topic_route_json(&route, dialect)))
    }

    fn query_data_version(&self, req: &RemotingCommand) -> Answer {
        let broker_addr = required(req, "brokerAddr")?;
        let version = if req.body.is_empty() {
            DataVersion::default()
        } else {
            let v = wire::parse_lenient(&req.body).map_err(|e| {
                RemotingCommand::response_with_remark(response::SYSTEM_ERROR, e.to_string())
            })?;
            DataVersion::from_value(&v)
        };
        let (changed, stored) = self.routes.query_data_version(broker_addr, version);
        let mut resp = RemotingCommand::response(response::SUCCESS).with_ext("changed", changed);
        if let Some(stored) = stored {
            resp.body = stored.to_json().into();
        }
        Ok(resp)
    }
}

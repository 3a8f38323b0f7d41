//! Who is connected: producer and consumer groups, their channels, and the
//! consumer groups' subscriptions (semantics.md §11).
//!
//! Filled by HEART_BEAT, emptied by UNREGISTER_CLIENT, by connections
//! closing, and by the expiry scan (channels silent for 120 s are closed).
//! When a consumer group's membership or topic set changes, every remaining
//! member gets NOTIFY_CONSUMER_IDS_CHANGED (oneway) so it rebalances.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use crate::remoting::codes::request;
use crate::remoting::{ConnectionContext, LanguageCode, RemotingCommand};

/// One subscription of a consumer group to a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionData {
    pub topic: String,
    /// The expression as the client wrote it (`*`, `TagA || TagB`, SQL92 text).
    pub sub_string: String,
    /// Trimmed tags (empty for `*` and SQL92).
    pub tags_set: BTreeSet<String>,
    /// Java `String.hashCode` of each tag.
    pub codes_set: BTreeSet<i32>,
    /// `TAG` or `SQL92`.
    pub expression_type: String,
    pub sub_version: i64,
    pub class_filter_mode: bool,
}

impl SubscriptionData {
    /// Builds a TAG subscription from an expression (semantics.md §7):
    /// null, empty or `*` match everything; else tags split on `||`, trimmed.
    pub fn from_expression(
        topic: &str,
        expr: &str,
        expression_type: Option<&str>,
        sub_version: i64,
    ) -> Self {
        let expression_type = match expression_type {
            Some(t) if !t.is_empty() => t.to_string(),
            _ => "TAG".to_string(),
        };
        let expr = expr.trim();
        let sub_string = if expr.is_empty() { "*" } else { expr }.to_string();
        let mut tags_set = BTreeSet::new();
        let mut codes_set = BTreeSet::new();
        if expression_type.eq_ignore_ascii_case("TAG") && sub_string != "*" {
            for tag in sub_string
                .split("||")
                .map(str::trim)
                .filter(|t| !t.is_empty())
            {
                codes_set.insert(engine::record::java_string_hash(tag));
                tags_set.insert(tag.to_string());
            }
        }
        SubscriptionData {
            topic: topic.to_string(),
            sub_string,
            tags_set,
            codes_set,
            expression_type,
            sub_version,
            class_filter_mode: false,
        }
    }

    /// `*` (or empty): every message matches.
    pub fn matches_all(&self) -> bool {
        self.sub_string == "*" || self.sub_string.is_empty()
    }

    pub fn is_tag_type(&self) -> bool {
        self.expression_type.is_empty() || self.expression_type.eq_ignore_ascii_case("TAG")
    }
}

/// One client connection as seen by a group.
#[derive(Debug, Clone)]
pub struct ClientChannel {
    pub ctx: ConnectionContext,
    pub client_id: String,
    pub language: LanguageCode,
    pub version: i32,
    pub last_update: Instant,
}

/// A consumer group's state.
#[derive(Debug, Clone, Default)]
pub struct ConsumerGroupInfo {
    /// By connection id.
    pub channels: HashMap<u64, ClientChannel>,
    /// By topic.
    pub subscriptions: HashMap<String, SubscriptionData>,
    /// `CONSUME_ACTIVELY` / `CONSUME_PASSIVELY`.
    pub consume_type: String,
    /// `CLUSTERING` / `BROADCASTING`.
    pub message_model: String,
    pub consume_from_where: String,
}

/// What a consumer reported in one heartbeat.
#[derive(Debug, Clone)]
pub struct ConsumerRegistration {
    pub group: String,
    pub consume_type: String,
    pub message_model: String,
    pub consume_from_where: String,
    pub subscriptions: Vec<SubscriptionData>,
}

/// The registry.
pub struct ClientRegistry {
    consumers: RwLock<HashMap<String, ConsumerGroupInfo>>,
    producers: RwLock<HashMap<String, HashMap<u64, ClientChannel>>>,
    /// Broker-wide `notifyConsumerIdsChangedEnable`.
    notify_enable: bool,
    /// Channels silent for longer are dropped (120 s).
    pub channel_expiry: Duration,
}

impl ClientRegistry {
    pub fn new(notify_enable: bool) -> Self {
        ClientRegistry {
            consumers: RwLock::default(),
            producers: RwLock::default(),
            notify_enable,
            channel_expiry: Duration::from_secs(120),
        }
    }

    /// Registers a consumer channel and its subscriptions; notifies the
    /// group when a member joined or the topic set changed and
    /// `group_notify` (the group's own flag) allows it. Returns whether the
    /// group changed.
    pub fn register_consumer(
        &self,
        reg: ConsumerRegistration,
        channel: ClientChannel,
        group_notify: bool,
    ) -> bool {
        let (changed, members) = {
            let mut all = self.consumers.write();
            let info = all.entry(reg.group.clone()).or_default();
            info.consume_type = reg.consume_type;
            info.message_model = reg.message_model;
            info.consume_from_where = reg.consume_from_where;
            let conn = channel.ctx.id();
            let mut changed = match info.channels.get_mut(&conn) {
                Some(existing) => {
                    existing.last_update = channel.last_update;
                    existing.client_id = channel.client_id;
                    existing.version = channel.version;
                    existing.language = channel.language;
                    false
                }
                None => {
                    tracing::info!(group = %reg.group, client = %channel.client_id, "new consumer connected");
                    info.channels.insert(conn, channel);
                    true
                }
            };
            // Topics: add new, replace with newer version, drop absent.
            let mut seen = BTreeSet::new();
            for sub in reg.subscriptions {
                seen.insert(sub.topic.clone());
                match info.subscriptions.get_mut(&sub.topic) {
                    Some(old) => {
                        if sub.sub_version > old.sub_version {
                            *old = sub;
                        }
                    }
                    None => {
                        info.subscriptions.insert(sub.topic.clone(), sub);
                        changed = true;
                    }
                }
            }
            let before = info.subscriptions.len();
            info.subscriptions.retain(|t, _| seen.contains(t));
            changed |= info.subscriptions.len() != before;
            let members: Vec<ConnectionContext> =
                info.channels.values().map(|c| c.ctx.clone()).collect();
            (changed, members)
        };
        if changed && group_notify {
            self.notify(&reg.group, &members);
        }
        changed
    }

    pub fn register_producer(&self, group: &str, channel: ClientChannel) {
        let mut all = self.producers.write();
        let g = all.entry(group.to_string()).or_default();
        match g.get_mut(&channel.ctx.id()) {
            Some(c) => c.last_update = channel.last_update,
            None => {
                tracing::info!(group, client = %channel.client_id, "new producer connected");
                g.insert(channel.ctx.id(), channel);
            }
        }
    }

    pub fn unregister_producer(&self, group: &str, conn: u64) {
        let mut all = self.producers.write();
        if let Some(g) = all.get_mut(group) {
            g.remove(&conn);
            if g.is_empty() {
                all.remove(group);
            }
        }
    }

    /// Removes a consumer channel from `group`; notifies the rest if `group_notify`.
    pub fn unregister_consumer(&self, group: &str, conn: u64, group_notify: bool) {
        let members = {
            let mut all = self.consumers.write();
            let Some(info) = all.get_mut(group) else {
                return;
            };
            if info.channels.remove(&conn).is_none() {
                return;
            }
            let members: Vec<_> = info.channels.values().map(|c| c.ctx.clone()).collect();
            if info.channels.is_empty() {
                all.remove(group);
            }
            members
        };
        if group_notify {
            self.notify(group, &members);
        }
    }

    /// A connection closed: drop it everywhere, notify affected groups.
    pub fn on_channel_closed(&self, conn: u64) {
        let mut affected = Vec::new();
        {
            let mut all = self.consumers.write();
            all.retain(|group, info| {
                if info.channels.remove(&conn).is_some() {
                    let members: Vec<_> = info.channels.values().map(|c| c.ctx.clone()).collect();
                    affected.push((group.clone(), members));
                }
                !info.channels.is_empty()
            });
        }
        {
            let mut all = self.producers.write();
            all.retain(|_, g| {
                g.remove(&conn);
                !g.is_empty()
            });
        }
        for (group, members) in affected {
            tracing::info!(group, conn, "consumer connection closed");
            self.notify(&group, &members);
        }
    }

    /// Closes and drops channels not heard from within `channel_expiry`.
    /// Returns how many were dropped (no notification, as Java).
    pub fn scan_expired(&self) -> usize {
        let now = Instant::now();
        let expiry = self.channel_expiry;
        let mut closed = Vec::new();
        {
            let mut all = self.consumers.write();
            all.retain(|group, info| {
                info.channels.retain(|_, c| {
                    let alive = now.duration_since(c.last_update) <= expiry;
                    if !alive {
                        tracing::warn!(group, client = %c.client_id, "consumer channel expired");
                        closed.push(c.ctx.clone());
                    }
                    alive
                });
                !info.channels.is_empty()
            });
        }
        {
            let mut all = self.producers.write();
            all.retain(|group, g| {
                g.retain(|_, c| {
                    let alive = now.duration_since(c.last_update) <= expiry;
                    if !alive {
                        tracing::warn!(group, client = %c.client_id, "producer channel expired");
                        closed.push(c.ctx.clone());
                    }
                    alive
                });
                !g.is_empty()
            });
        }
        for c in &closed {
            c.close();
        }
        closed.len()
    }

    fn notify(&self, group: &str, members: &[ConnectionContext]) {
        if !self.notify_enable {
            return;
        }
        for ctx in members {
            let req = RemotingCommand::request(request::NOTIFY_CONSUMER_IDS_CHANGED)
                .with_ext("consumerGroup", group);
            if let Err(e) = ctx.send_oneway(req) {
                tracing::debug!(group, conn = ctx.id(), "cannot notify consumer: {e}");
            }
        }
    }

    /// Client ids of the group's live channels.
    pub fn consumer_ids(&self, group: &str) -> Vec<String> {
        self.consumers
            .read()
            .get(group)
            .map(|info| {
                info.channels
                    .values()
                    .map(|c| c.client_id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The group's registered subscription to `topic` (from heartbeats).
    pub fn subscription(&self, group: &str, topic: &str) -> Option<SubscriptionData> {
        self.consumers
            .read()
            .get(group)
            .and_then(|info| info.subscriptions.get(topic).cloned())
    }

    /// A copy of the group's state (channels, subscriptions, message model).
    pub fn consumer_group(&self, group: &str) -> Option<ConsumerGroupInfo> {
        self.consumers.read().get(group).cloned()
    }

    /// Live producer connections of a group (transaction check-backs).
    pub fn producer_channels(&self, group: &str) -> Vec<ConnectionContext> {
        self.producers
            .read()
            .get(group)
            .map(|g| g.values().map(|c| c.ctx.clone()).collect())
            .unwrap_or_default()
    }

    pub fn consumer_group_names(&self) -> Vec<String> {
        self.consumers.read().keys().cloned().collect()
    }
}

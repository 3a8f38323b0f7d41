//! Broker settings: RocketMQ's `BrokerConfig` and `NettyServerConfig` keys
//! (store.md §12.3), read from the same `broker.conf` as the store's
//! [`StoreConfig`].
//!
//! Loading order, as `mqbroker -c FILE` does: defaults, then the file, then
//! command-line `key=value` overrides (later wins). Every key is offered to
//! the store section and this one; a key neither knows is a warning, a
//! malformed value an error naming the key. `haListenPort` is always forced
//! to `listenPort + 1` afterwards, as Java's start-up does.
//!
//! Keys that only tune Java machinery we do not have (thread pools, queue
//! capacities, Netty buffers, transient store pool commit intervals), and
//! the rest of RocketMQ 4.9.8's keys for features we do not implement
//! (reply messages, slow-consumer disabling, address servers), are
//! accepted and shown by `-p` so a real `broker.conf` loads without
//! warnings; they have no effect. A commit log we could not read as Java
//! wrote it (DLedger, several directories) is refused instead.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::Path;

use engine::config::{apply_properties, render, ConfigError, Properties, StoreConfig};

use crate::remoting::ServerConfig;

fn default_broker_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "broker-a".to_string())
}

/// Processors Java sees (`Runtime.availableProcessors()`), for the thread
/// pool defaults it derives from them.
fn cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
}

fn default_namesrv_addr() -> Option<String> {
    std::env::var("NAMESRV_ADDR").ok().filter(|s| !s.is_empty())
}

engine::config_struct! {
    /// Broker configuration, by `broker.conf` key.
    pub struct BrokerConfig {
        /// Cluster this broker belongs to (`DefaultCluster`).
        broker_cluster_name: String = "DefaultCluster".to_string() => "brokerClusterName",
        /// Broker group name (local host name).
        broker_name: String = default_broker_name() => "brokerName",
        /// 0 = master, > 0 = slave.
        broker_id: i64 = 0 => "brokerId",
        /// Address advertised to name servers and written as STOREHOST;
        /// empty = the first non-loopback IPv4 address (127.0.0.1 if none).
        broker_ip1: Option<String> = None => "brokerIP1",
        /// Address advertised for HA (`haServerAddr`); empty = brokerIP1.
        broker_ip2: Option<String> = None => "brokerIP2",
        /// Remoting port (10911); the fast/VIP port is listenPort − 2.
        listen_port: u16 = 10911 => "listenPort",
        /// Interface both ports bind to (all interfaces).
        bind_address: String = "0.0.0.0".to_string() => "bindAddress",
        /// Name servers, `host:port;host:port` (env `NAMESRV_ADDR`).
        namesrv_addr: Option<String> = default_namesrv_addr() => "namesrvAddr",
        /// Queue count of TBW102, the auto-create template (8).
        default_topic_queue_nums: i32 = 8 => "defaultTopicQueueNums",
        /// Create TBW102 and auto-create topics on first send (true).
        auto_create_topic_enable: bool = true => "autoCreateTopicEnable",
        /// Create subscription groups on first use (true).
        auto_create_subscription_group: bool = true => "autoCreateSubscriptionGroup",
        /// Broker-wide permission (6 = read + write).
        broker_permission: i32 = 6 => "brokerPermission",
        /// Cluster-name topic readable/writable (true).
        cluster_topic_enable: bool = true => "clusterTopicEnable",
        /// Broker-name topic readable/writable (true).
        broker_topic_enable: bool = true => "brokerTopicEnable",
        /// Create the message-trace topic at start (false).
        trace_topic_enable: bool = false => "traceTopicEnable",
        /// Name of the message-trace topic.
        msg_trace_topic_name: String = "RMQ_SYS_TRACE_TOPIC".to_string() => "msgTraceTopicName",
        /// Hold pulls that found nothing until a message arrives (true).
        long_polling_enable: bool = true => "longPollingEnable",
        /// Hold time in ms of a pull when long polling is off (1000).
        short_polling_time_mills: u64 = 1000 => "shortPollingTimeMills",
        /// Tell consumers when their group's membership changes (true).
        notify_consumer_ids_changed_enable: bool = true => "notifyConsumerIdsChangedEnable",
        slave_read_enable: bool = false => "slaveReadEnable",
        transfer_msg_by_heap: bool = true => "transferMsgByHeap",
        /// ms between consumerOffset.json writes (5000).
        flush_consumer_offset_interval: u64 = 5000 => "flushConsumerOffsetInterval",
        /// Refuse transactional (half) messages with NO_PERMISSION (false).
        reject_transaction_message: bool = false => "rejectTransactionMessage",
        /// ms a half message is left alone before its first check-back (6000);
        /// a message's `CHECK_IMMUNITY_TIME_IN_SECONDS` overrides it.
        transaction_time_out: u64 = 6000 => "transactionTimeOut",
        /// Check-backs of one half message before it is discarded into
        /// `TRANS_CHECK_MAX_TIME_TOPIC` (15).
        transaction_check_max: u32 = 15 => "transactionCheckMax",
        /// ms between check-back runs (60000; at least 10 used).
        transaction_check_interval: u64 = 60_000 => "transactionCheckInterval",
        /// Allow SQL92 subscriptions (false).
        enable_property_filter: bool = false => "enablePropertyFilter",
        enable_calc_filter_bit_map: bool = false => "enableCalcFilterBitMap",
        filter_support_retry: bool = false => "filterSupportRetry",
        /// ms between registrations with the name servers (30000, clamped to 10000..60000).
        register_name_server_period: u64 = 30_000 => "registerNameServerPeriod",
        /// ms a registration waits for each name server (6000).
        register_broker_timeout_mills: u64 = 6000 => "registerBrokerTimeoutMills",
        force_register: bool = true => "forceRegister",
        /// Compressed registration bodies (not supported: always sent as JSON).
        compressed_register: bool = false => "compressedRegister",
        /// `MSG_REGION` of send responses.
        region_id: String = "DefaultRegion".to_string() => "regionId",
        /// `TRACE_ON` of send responses.
        trace_on: bool = true => "traceOn",
        broker_fast_failure_enable: bool = true => "brokerFastFailureEnable",
        wait_time_mills_in_send_queue: u64 = 200 => "waitTimeMillsInSendQueue",
        wait_time_mills_in_pull_queue: u64 = 5000 => "waitTimeMillsInPullQueue",
        wait_time_mills_in_heartbeat_queue: u64 = 31_000 => "waitTimeMillsInHeartbeatQueue",
        wait_time_mills_in_transaction_queue: u64 = 3000 => "waitTimeMillsInTransactionQueue",
        /// Sends are refused (SYSTEM_ERROR) before this epoch-ms time (0).
        start_accept_send_request_time_stamp: i64 = 0 => "startAcceptSendRequestTimeStamp",
        acl_enable: bool = false => "aclEnable",
        send_message_thread_pool_nums: u32 = cores().min(4) => "sendMessageThreadPoolNums",
        pull_message_thread_pool_nums: u32 = 16 + 2 * cores() => "pullMessageThreadPoolNums",
        query_message_thread_pool_nums: u32 = 8 + cores() => "queryMessageThreadPoolNums",
        admin_broker_thread_pool_nums: u32 = 16 => "adminBrokerThreadPoolNums",
        client_manage_thread_pool_nums: u32 = 32 => "clientManageThreadPoolNums",
        consumer_manage_thread_pool_nums: u32 = 32 => "consumerManageThreadPoolNums",
        heartbeat_thread_pool_nums: u32 = cores().min(32) => "heartbeatThreadPoolNums",
        end_transaction_thread_pool_nums: u32 = (8 + 2 * cores()).max(cores().min(4) * 4) => "endTransactionThreadPoolNums",
        send_thread_pool_queue_capacity: u32 = 10_000 => "sendThreadPoolQueueCapacity",
        pull_thread_pool_queue_capacity: u32 = 100_000 => "pullThreadPoolQueueCapacity",
        use_tls: bool = false => "useTLS",
        server_worker_threads: u32 = 8 => "serverWorkerThreads",
        server_callback_executor_threads: u32 = 0 => "serverCallbackExecutorThreads",
        server_selector_threads: u32 = 3 => "serverSelectorThreads",
        /// Connections without reads or writes for this many seconds are
        /// closed, unless an answer to them is pending (120; 0 = never).
        server_channel_max_idle_time_seconds: u64 = 120 => "serverChannelMaxIdleTimeSeconds",
        /// Ours, not Java's: connections served at once per port; more wait
        /// in the listen backlog (10000).
        server_max_connections: usize = 10_000 => "serverMaxConnections",
        server_oneway_semaphore_value: u32 = 256 => "serverOnewaySemaphoreValue",
        server_async_semaphore_value: u32 = 64 => "serverAsyncSemaphoreValue",
        /// 0: the kernel's default (RocketMQ 4.9.3+).
        server_socket_snd_buf_size: u32 = 0 => "serverSocketSndBufSize",
        server_socket_rcv_buf_size: u32 = 0 => "serverSocketRcvBufSize",
        server_pooled_byte_buf_allocator_enable: bool = true => "serverPooledByteBufAllocatorEnable",
        use_epoll_native_selector: bool = false => "useEpollNativeSelector",
        // MessageStoreConfig keys the engine does not model (accepted, no effect).
        enable_consume_queue_ext: bool = false => "enableConsumeQueueExt",
        commit_interval_commit_log: u64 = 200 => "commitIntervalCommitLog",
        commit_commit_log_least_pages: u64 = 4 => "commitCommitLogLeastPages",
        commit_commit_log_thorough_interval: u64 = 200 => "commitCommitLogThoroughInterval",
        fast_fail_if_no_buffer_in_store_pool: bool = false => "fastFailIfNoBufferInStorePool",
        offset_check_in_slave: bool = false => "offsetCheckInSlave",
        disk_fall_recorded: bool = true => "diskFallRecorded",
        /// Refused when true (see [`BrokerSettings::load`]).
        enable_dleger_commit_log: bool = false => "enableDLegerCommitLog",
        enable_schedule_async_deliver: bool = false => "enableScheduleAsyncDeliver",
        enable_lmq: bool = false => "enableLmq",
        enable_multi_dispatch: bool = false => "enableMultiDispatch",
        // The rest of RocketMQ 4.9.8's keys (BrokerConfig, MessageStoreConfig,
        // NettyServerConfig, NettyClientConfig) with their defaults, so that
        // a file using them is read without "unknown key" warnings; none has
        // an effect here.
        rocketmq_home: Option<String> = std::env::var("ROCKETMQ_HOME").ok() => "rocketmqHome",
        message_store_plug_in: String = String::new() => "messageStorePlugIn",
        put_message_future_thread_pool_nums: i32 = cores().min(4) as i32 => "putMessageFutureThreadPoolNums",
        process_reply_message_thread_pool_nums: i32 = 16 + 2 * cores() as i32 => "processReplyMessageThreadPoolNums",
        flush_consumer_offset_history_interval: i32 = 60_000 => "flushConsumerOffsetHistoryInterval",
        fetch_namesrv_addr_by_address_server: bool = false => "fetchNamesrvAddrByAddressServer",
        put_thread_pool_queue_capacity: i32 = 10_000 => "putThreadPoolQueueCapacity",
        reply_thread_pool_queue_capacity: i32 = 10_000 => "replyThreadPoolQueueCapacity",
        query_thread_pool_queue_capacity: i32 = 20_000 => "queryThreadPoolQueueCapacity",
        client_manager_thread_pool_queue_capacity: i32 = 1_000_000 => "clientManagerThreadPoolQueueCapacity",
        consumer_manager_thread_pool_queue_capacity: i32 = 1_000_000 => "consumerManagerThreadPoolQueueCapacity",
        heartbeat_thread_pool_queue_capacity: i32 = 50_000 => "heartbeatThreadPoolQueueCapacity",
        end_transaction_pool_queue_capacity: i32 = 100_000 => "endTransactionPoolQueueCapacity",
        filter_server_nums: i32 = 0 => "filterServerNums",
        high_speed_mode: bool = false => "highSpeedMode",
        commercial_enable: bool = true => "commercialEnable",
        commercial_timer_count: i32 = 1 => "commercialTimerCount",
        commercial_trans_count: i32 = 1 => "commercialTransCount",
        commercial_big_count: i32 = 1 => "commercialBigCount",
        commercial_base_count: i32 = 1 => "commercialBaseCount",
        max_delay_time: i32 = 40 => "maxDelayTime",
        disable_consume_if_consumer_read_slowly: bool = false => "disableConsumeIfConsumerReadSlowly",
        consumer_fallbehind_threshold: i64 = 16 * 1024 * 1024 * 1024 => "consumerFallbehindThreshold",
        expect_consumer_num_use_filter: i32 = 32 => "expectConsumerNumUseFilter",
        max_error_rate_of_bloom_filter: i32 = 20 => "maxErrorRateOfBloomFilter",
        filter_data_clean_time_span: i64 = 24 * 3600 * 1000 => "filterDataCleanTimeSpan",
        store_reply_message_enable: bool = true => "storeReplyMessageEnable",
        enable_detail_stat: bool = true => "enableDetailStat",
        auto_delete_unused_stats: bool = false => "autoDeleteUnusedStats",
        isolate_log_enable: bool = false => "isolateLogEnable",
        config_black_list: String = "configBlackList;brokerConfigPath".to_string() => "configBlackList",
        store_path_dleger_commit_log: Option<String> = None => "storePathDLedgerCommitLog",
        /// Refused when set (see [`BrokerSettings::load`]).
        read_only_commit_log_store_paths: Option<String> = None => "readOnlyCommitLogStorePaths",
        mapped_file_size_consume_queue_ext: i32 = 48 * 1024 * 1024 => "mappedFileSizeConsumeQueueExt",
        bit_map_length_consume_queue_ext: i32 = 64 => "bitMapLengthConsumeQueueExt",
        put_msg_index_hight_water: i32 = 600_000 => "putMsgIndexHightWater",
        debug_lock_enable: bool = false => "debugLockEnable",
        dleger_group: Option<String> = None => "dLegerGroup",
        dleger_peers: Option<String> = None => "dLegerPeers",
        dleger_self_id: Option<String> = None => "dLegerSelfId",
        preferred_leader_id: Option<String> = None => "preferredLeaderId",
        enable_batch_push: bool = false => "enableBatchPush",
        enable_schedule_message_stats: bool = true => "enableScheduleMessageStats",
        max_lmq_consume_queue_num: i32 = 20_000 => "maxLmqConsumeQueueNum",
        schedule_async_deliver_max_pending_limit: i32 = 2000 => "scheduleAsyncDeliverMaxPendingLimit",
        schedule_async_deliver_max_resend_num2_blocked: i32 = 3 => "scheduleAsyncDeliverMaxResendNum2Blocked",
        write_buffer_high_water_mark: i32 = 0 => "writeBufferHighWaterMark",
        write_buffer_low_water_mark: i32 = 0 => "writeBufferLowWaterMark",
        server_socket_backlog: i32 = 1024 => "serverSocketBacklog",
        client_worker_threads: i32 = 4 => "clientWorkerThreads",
        client_callback_executor_threads: i32 = cores() as i32 => "clientCallbackExecutorThreads",
        client_oneway_semaphore_value: i32 = 65_535 => "clientOnewaySemaphoreValue",
        client_async_semaphore_value: i32 = 65_535 => "clientAsyncSemaphoreValue",
        connect_timeout_millis: i32 = 3000 => "connectTimeoutMillis",
        channel_not_active_interval: i64 = 60_000 => "channelNotActiveInterval",
        client_channel_max_idle_time_seconds: i32 = 120 => "clientChannelMaxIdleTimeSeconds",
        client_socket_snd_buf_size: i32 = 0 => "clientSocketSndBufSize",
        client_socket_rcv_buf_size: i32 = 0 => "clientSocketRcvBufSize",
        client_pooled_byte_buf_allocator_enable: bool = false => "clientPooledByteBufAllocatorEnable",
        client_close_socket_if_timeout: bool = true => "clientCloseSocketIfTimeout",
    }
}

/// The first non-loopback IPv4 address of this host, found by asking the
/// kernel which source address it would use (no packet is sent).
fn local_ipv4() -> Option<Ipv4Addr> {
    let sock = UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.connect("10.255.255.255:1").ok()?;
    match sock.local_addr().ok()?.ip() {
        IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

impl BrokerConfig {
    /// `brokerIP1`, resolved.
    pub fn broker_ip1(&self) -> String {
        match &self.broker_ip1 {
            Some(ip) => ip.clone(),
            None => local_ipv4().unwrap_or(Ipv4Addr::LOCALHOST).to_string(),
        }
    }

    /// `brokerIP2`, resolved (defaults to brokerIP1).
    pub fn broker_ip2(&self) -> String {
        self.broker_ip2.clone().unwrap_or_else(|| self.broker_ip1())
    }

    /// Name server addresses (`;`-separated list), empty if none.
    pub fn namesrv_addrs(&self) -> Vec<String> {
        self.namesrv_addr
            .as_deref()
            .unwrap_or("")
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Registration period, clamped to [10 s, 60 s] as Java does.
    pub fn register_period_ms(&self) -> u64 {
        self.register_name_server_period.clamp(10_000, 60_000)
    }

    /// The fast (VIP) port, listenPort − 2.
    pub fn fast_listen_port(&self) -> u16 {
        self.listen_port.saturating_sub(2)
    }

    /// Settings of both remoting ports.
    pub fn server_config(&self) -> ServerConfig {
        ServerConfig::with_limits(
            self.server_channel_max_idle_time_seconds,
            self.server_max_connections,
        )
    }
}

/// The keys RocketMQ 4.9.8 marks `@ImportantField` (BrokerConfig and
/// MessageStoreConfig), printed by `-m`.
const IMPORTANT_KEYS: &[&str] = &[
    "namesrvAddr",
    "brokerIP1",
    "brokerName",
    "brokerClusterName",
    "brokerId",
    "autoCreateTopicEnable",
    "autoCreateSubscriptionGroup",
    "msgTraceTopicName",
    "traceTopicEnable",
    "rejectTransactionMessage",
    "fetchNamesrvAddrByAddressServer",
    "transactionTimeOut",
    "transactionCheckMax",
    "transactionCheckInterval",
    "aclEnable",
    "storePathRootDir",
    "storePathCommitLog",
    "storePathDLedgerCommitLog",
    "flushIntervalCommitLog",
    "commitIntervalCommitLog",
    "flushCommitLogTimed",
    "deleteWhen",
    "fileReservedTime",
    "maxTransferBytesOnMessageInMemory",
    "maxTransferCountOnMessageInMemory",
    "maxTransferBytesOnMessageInDisk",
    "maxTransferCountOnMessageInDisk",
    "accessMessageInMemoryMaxRatio",
    "messageIndexEnable",
    "messageIndexSafe",
    "haMasterAddress",
    "brokerRole",
    "flushDiskType",
    "cleanFileForciblyEnable",
    "transientStorePoolEnable",
];

/// Both configurations of a broker process.
#[derive(Debug, Clone, Default)]
pub struct BrokerSettings {
    pub broker: BrokerConfig,
    pub store: StoreConfig,
}

impl BrokerSettings {
    /// Applies properties (file, then overrides) to both sections; returns
    /// the keys nobody knows (already logged as warnings).
    pub fn apply(&mut self, props: &Properties) -> Result<Vec<String>, ConfigError> {
        let unknown = apply_properties(props, &mut [&mut self.broker, &mut self.store])?;
        self.finish();
        Ok(unknown)
    }

    /// Loads `file` (if any) then `overrides` (`key=value`).
    pub fn load(file: Option<&Path>, overrides: &[String]) -> Result<Self, ConfigError> {
        let file_props = match file {
            Some(p) => Properties::load(p)?,
            None => Properties::default(),
        };
        let arg_props = Properties::from_args(overrides)?;
        let mut s = BrokerSettings::default();
        // One after the other: within each, a key's current spelling wins
        // over an older one; an override wins over the file in any spelling.
        for props in [&file_props, &arg_props] {
            apply_properties(props, &mut [&mut s.broker, &mut s.store])?;
        }
        s.finish();
        s.store.validate()?;
        // The fast port is listenPort - 2 and haListenPort listenPort + 1:
        // all must be real ports (port 0 would bind any free port).
        if !(3..u16::MAX).contains(&s.broker.listen_port) {
            return Err(ConfigError::BadValue {
                key: "listenPort".to_string(),
                value: s.broker.listen_port.to_string(),
                expected: "3..65534 (the fast port is listenPort - 2, haListenPort listenPort + 1)"
                    .to_string(),
            });
        }
        // Java's start-up refuses an address it cannot split into host and
        // port; ours would only fail, quietly and forever, to register.
        for addr in s.broker.namesrv_addrs() {
            let port_ok = addr
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                return Err(ConfigError::BadValue {
                    key: "namesrvAddr".to_string(),
                    value: s.broker.namesrv_addr.clone().unwrap_or_default(),
                    expected: format!(
                        "host:port;host:port, e.g. 127.0.0.1:9876;192.168.0.1:9876 (`{addr}` is not host:port)"
                    ),
                });
            }
        }
        // Files of the log in read-only directories (RocketMQ 4.9's
        // multi-path commit log) would be missing from ours.
        if let Some(paths) = &s.broker.read_only_commit_log_store_paths {
            return Err(ConfigError::BadValue {
                key: "readOnlyCommitLogStorePaths".to_string(),
                value: paths.clone(),
                expected: "empty (a commit log over several directories is not supported)"
                    .to_string(),
            });
        }
        // A DLedger broker's messages are in dledger-<id>/ in DLedger's
        // format: ours would start on an empty log as if they were gone.
        if s.broker.enable_dleger_commit_log {
            return Err(ConfigError::BadValue {
                key: "enableDLegerCommitLog".to_string(),
                value: "true".to_string(),
                expected: "false (DLedger commit logs are not supported)".to_string(),
            });
        }
        // Java's start-up refuses a slave without a slave id.
        if s.store.broker_role == engine::BrokerRole::Slave && s.broker.broker_id <= 0 {
            return Err(ConfigError::BadValue {
                key: "brokerId".to_string(),
                value: s.broker.broker_id.to_string(),
                expected: "> 0 for brokerRole=SLAVE".to_string(),
            });
        }
        Ok(s)
    }

    /// Start-up rules applied after reading: haListenPort = listenPort + 1;
    /// masters get brokerId 0.
    pub fn finish(&mut self) {
        self.store.ha_listen_port = self.broker.listen_port.saturating_add(1);
        if self.store.broker_role != engine::BrokerRole::Slave {
            self.broker.broker_id = 0;
        }
    }

    /// `key=value` lines of every setting, sorted (like `mqbroker -p`);
    /// brokerIP1/brokerIP2 as resolved, as Java shows its defaults.
    pub fn render(&self) -> String {
        let mut broker = self.broker.clone();
        broker.broker_ip1 = Some(self.broker.broker_ip1());
        broker.broker_ip2 = Some(self.broker.broker_ip2());
        render(&[&broker, &self.store])
    }

    /// The lines of [`render`](Self::render) for RocketMQ's
    /// `@ImportantField` keys (like `mqbroker -m`).
    pub fn render_important(&self) -> String {
        self.render()
            .lines()
            .filter(|l| {
                l.split_once('=')
                    .is_some_and(|(k, _)| IMPORTANT_KEYS.contains(&k))
            })
            .map(|l| format!("{l}\n"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str]) -> Result<BrokerSettings, String> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        BrokerSettings::load(None, &args).map_err(|e| e.to_string())
    }

    #[test]
    fn the_ha_port_follows_the_listen_port_and_must_fit() {
        let s = load(&["listenPort=20000"]).unwrap();
        assert_eq!(s.store.ha_listen_port, 20001);
        // The fast port is listenPort - 2: below 3 it would be 0, i.e. any port.
        for bad in ["listenPort=65535", "listenPort=0", "listenPort=2"] {
            let err = load(&[bad]).unwrap_err();
            assert!(err.contains("listenPort"), "{err}");
        }
        let err = load(&["listenPort"]).unwrap_err();
        assert!(err.contains("command-line argument `listenPort`"), "{err}");
    }

    #[test]
    fn a_name_server_address_without_a_port_is_refused() {
        // mqbroker exits at start-up with "The Name Server Address[..] illegal".
        for bad in [
            "foo",
            "127.0.0.1",
            "127.0.0.1:x",
            "127.0.0.1:9876;127.0.0.2:65536",
        ] {
            let err = load(&[&format!("namesrvAddr={bad}")]).unwrap_err();
            assert!(err.contains("namesrvAddr") && err.contains(bad), "{err}");
        }
        let s = load(&["namesrvAddr=127.0.0.1:9876;localhost:9877;"]).unwrap();
        assert_eq!(
            s.broker.namesrv_addrs(),
            ["127.0.0.1:9876", "localhost:9877"]
        );
    }

    #[test]
    fn print_shows_the_addresses_in_use() {
        // mqbroker -p prints the resolved local address, never an empty one.
        let s = load(&["brokerIP1=10.1.2.3"]).unwrap();
        let text = s.render();
        assert!(text.contains("brokerIP1=10.1.2.3\n"), "{text}");
        assert!(text.contains("brokerIP2=10.1.2.3\n"), "{text}");
        let text = load(&[]).unwrap().render();
        let ip1 = BrokerConfig::default().broker_ip1();
        assert!(text.contains(&format!("brokerIP1={ip1}\n")), "{text}");
        assert!(text.contains(&format!("brokerIP2={ip1}\n")), "{text}");
    }

    #[test]
    fn a_commit_log_we_cannot_read_is_refused() {
        // RocketMQ 4.9 spreads the files of such a log over the directories;
        // reading only the first would see every other file missing.
        for bad in [
            "storePathCommitLog=/data1/commitlog,/data2/commitlog",
            "readOnlyCommitLogStorePaths=/old/commitlog",
            // DLedger keeps its log elsewhere, in another format.
            "enableDLegerCommitLog=true",
        ] {
            let err = load(&[bad]).unwrap_err();
            let key = bad.split('=').next().unwrap();
            assert!(err.contains(key), "{err}");
        }
        let s = load(&["storePathCommitLog=/data1/commitlog,"]).unwrap();
        assert_eq!(s.store.commit_log_dir(), Path::new("/data1/commitlog"));
    }

    #[test]
    fn a_command_line_override_wins_in_any_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.conf");
        std::fs::write(
            &path,
            "mappedFileSizeCommitLog=8192\nbrokerRole=ASYNC_MASTER\nbrokerId=1\n",
        )
        .unwrap();
        let args = [
            "mapedFileSizeCommitLog=4096".to_string(),
            "brokerRole=SLAVE".to_string(),
        ];
        let s = BrokerSettings::load(Some(&path), &args).unwrap();
        assert_eq!(s.store.mapped_file_size_commit_log, 4096);
        assert_eq!(s.broker.broker_id, 1);
    }

    #[test]
    fn a_property_file_with_java_syntax_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.conf");
        std::fs::write(
            &path,
            b"# Configuraci\xf3n\nnamesrvAddr=127.0.0.1:9876;\\\n    127.0.0.2:9876\nlistenPort 20100\nflushDiskType=SYNC_fLUSH\n",
        )
        .unwrap();
        let s = BrokerSettings::load(Some(&path), &[]).unwrap();
        assert_eq!(
            s.broker.namesrv_addr.as_deref(),
            Some("127.0.0.1:9876;127.0.0.2:9876")
        );
        assert_eq!(s.broker.listen_port, 20100);
        assert_eq!(s.store.flush_disk_type, engine::FlushDiskType::SyncFlush);
    }

    /// Every key RocketMQ 4.9.8's broker reads from its property file (the
    /// setters of BrokerConfig, NettyServerConfig, NettyClientConfig and
    /// MessageStoreConfig).
    const ROCKETMQ_4_9_KEYS: &[&str] = &[
        "accessMessageInMemoryMaxRatio",
        "aclEnable",
        "adminBrokerThreadPoolNums",
        "autoCreateSubscriptionGroup",
        "autoCreateTopicEnable",
        "autoDeleteUnusedStats",
        "bitMapLengthConsumeQueueExt",
        "brokerClusterName",
        "brokerFastFailureEnable",
        "brokerIP1",
        "brokerIP2",
        "brokerId",
        "brokerName",
        "brokerPermission",
        "brokerRole",
        "brokerTopicEnable",
        "channelNotActiveInterval",
        "checkCRCOnRecover",
        "cleanFileForciblyEnable",
        "cleanResourceInterval",
        "clientAsyncSemaphoreValue",
        "clientCallbackExecutorThreads",
        "clientChannelMaxIdleTimeSeconds",
        "clientCloseSocketIfTimeout",
        "clientManageThreadPoolNums",
        "clientManagerThreadPoolQueueCapacity",
        "clientOnewaySemaphoreValue",
        "clientPooledByteBufAllocatorEnable",
        "clientSocketRcvBufSize",
        "clientSocketSndBufSize",
        "clientWorkerThreads",
        "clusterTopicEnable",
        "commercialBaseCount",
        "commercialBigCount",
        "commercialEnable",
        "commercialTimerCount",
        "commercialTransCount",
        "commitCommitLogLeastPages",
        "commitCommitLogThoroughInterval",
        "commitIntervalCommitLog",
        "compressedRegister",
        "configBlackList",
        "connectTimeoutMillis",
        "consumerFallbehindThreshold",
        "consumerManageThreadPoolNums",
        "consumerManagerThreadPoolQueueCapacity",
        "dLegerGroup",
        "dLegerPeers",
        "dLegerSelfId",
        "debugLockEnable",
        "defaultQueryMaxNum",
        "defaultTopicQueueNums",
        "deleteCommitLogFilesInterval",
        "deleteConsumeQueueFilesInterval",
        "deleteWhen",
        "destroyMapedFileIntervalForcibly",
        "disableConsumeIfConsumerReadSlowly",
        "diskFallRecorded",
        "diskMaxUsedSpaceRatio",
        "duplicationEnable",
        "enableBatchPush",
        "enableCalcFilterBitMap",
        "enableConsumeQueueExt",
        "enableDLegerCommitLog",
        "enableDetailStat",
        "enableLmq",
        "enableMultiDispatch",
        "enablePropertyFilter",
        "enableScheduleAsyncDeliver",
        "enableScheduleMessageStats",
        "endTransactionPoolQueueCapacity",
        "endTransactionThreadPoolNums",
        "expectConsumerNumUseFilter",
        "fastFailIfNoBufferInStorePool",
        "fetchNamesrvAddrByAddressServer",
        "fileReservedTime",
        "filterDataCleanTimeSpan",
        "filterServerNums",
        "filterSupportRetry",
        "flushCommitLogLeastPages",
        "flushCommitLogThoroughInterval",
        "flushCommitLogTimed",
        "flushConsumeQueueLeastPages",
        "flushConsumeQueueThoroughInterval",
        "flushConsumerOffsetHistoryInterval",
        "flushConsumerOffsetInterval",
        "flushDelayOffsetInterval",
        "flushDiskType",
        "flushIntervalCommitLog",
        "flushIntervalConsumeQueue",
        "flushLeastPagesWhenWarmMapedFile",
        "forceRegister",
        "haHousekeepingInterval",
        "haListenPort",
        "haMasterAddress",
        "haSendHeartbeatInterval",
        "haSlaveFallbehindMax",
        "haTransferBatchSize",
        "heartbeatThreadPoolNums",
        "heartbeatThreadPoolQueueCapacity",
        "highSpeedMode",
        "isolateLogEnable",
        "listenPort",
        "longPollingEnable",
        "mappedFileSizeCommitLog",
        "mappedFileSizeConsumeQueue",
        "mappedFileSizeConsumeQueueExt",
        "maxDelayTime",
        "maxErrorRateOfBloomFilter",
        "maxHashSlotNum",
        "maxIndexNum",
        "maxLmqConsumeQueueNum",
        "maxMessageSize",
        "maxMsgsNumBatch",
        "maxTransferBytesOnMessageInDisk",
        "maxTransferBytesOnMessageInMemory",
        "maxTransferCountOnMessageInDisk",
        "maxTransferCountOnMessageInMemory",
        "messageDelayLevel",
        "messageIndexEnable",
        "messageIndexSafe",
        "messageStorePlugIn",
        "msgTraceTopicName",
        "namesrvAddr",
        "notifyConsumerIdsChangedEnable",
        "offsetCheckInSlave",
        "osPageCacheBusyTimeOutMills",
        "preferredLeaderId",
        "processReplyMessageThreadPoolNums",
        "pullMessageThreadPoolNums",
        "pullThreadPoolQueueCapacity",
        "putMessageFutureThreadPoolNums",
        "putMsgIndexHightWater",
        "putThreadPoolQueueCapacity",
        "queryMessageThreadPoolNums",
        "queryThreadPoolQueueCapacity",
        "readOnlyCommitLogStorePaths",
        "redeleteHangedFileInterval",
        "regionId",
        "registerBrokerTimeoutMills",
        "registerNameServerPeriod",
        "rejectTransactionMessage",
        "replyThreadPoolQueueCapacity",
        "rocketmqHome",
        "scheduleAsyncDeliverMaxPendingLimit",
        "scheduleAsyncDeliverMaxResendNum2Blocked",
        "sendMessageThreadPoolNums",
        "sendThreadPoolQueueCapacity",
        "serverAsyncSemaphoreValue",
        "serverCallbackExecutorThreads",
        "serverChannelMaxIdleTimeSeconds",
        "serverOnewaySemaphoreValue",
        "serverPooledByteBufAllocatorEnable",
        "serverSelectorThreads",
        "serverSocketBacklog",
        "serverSocketRcvBufSize",
        "serverSocketSndBufSize",
        "serverWorkerThreads",
        "shortPollingTimeMills",
        "slaveReadEnable",
        "slaveTimeout",
        "startAcceptSendRequestTimeStamp",
        "storePathCommitLog",
        "storePathDLedgerCommitLog",
        "storePathRootDir",
        "storeReplyMessageEnable",
        "syncFlushTimeout",
        "traceOn",
        "traceTopicEnable",
        "transactionCheckInterval",
        "transactionCheckMax",
        "transactionTimeOut",
        "transferMsgByHeap",
        "transientStorePoolEnable",
        "transientStorePoolSize",
        "useEpollNativeSelector",
        "useReentrantLockWhenPutMessage",
        "useTLS",
        "waitTimeMillsInHeartbeatQueue",
        "waitTimeMillsInPullQueue",
        "waitTimeMillsInSendQueue",
        "waitTimeMillsInTransactionQueue",
        "warmMapedFileEnable",
        "writeBufferHighWaterMark",
        "writeBufferLowWaterMark",
    ];

    #[test]
    fn every_rocketmq_4_9_key_is_known() {
        let defaults = BrokerSettings::default().render();
        let shown: std::collections::BTreeMap<&str, &str> =
            defaults.lines().filter_map(|l| l.split_once('=')).collect();
        let missing: Vec<&&str> = ROCKETMQ_4_9_KEYS
            .iter()
            .filter(|k| !shown.contains_key(**k))
            .collect();
        assert!(missing.is_empty(), "not shown by -p: {missing:?}");
        // A file setting each of them to its default loads without a warning.
        let mut props = Properties::default();
        for k in ROCKETMQ_4_9_KEYS {
            props.set(k, shown[k]);
        }
        let unknown = BrokerSettings::default().apply(&props).unwrap();
        assert!(unknown.is_empty(), "{unknown:?}");
    }

    #[test]
    fn defaults_are_rocketmq_4_9s() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        let b = BrokerConfig::default();
        assert_eq!(b.send_message_thread_pool_nums, cores.min(4));
        assert_eq!(b.pull_message_thread_pool_nums, 16 + 2 * cores);
        assert_eq!(b.query_message_thread_pool_nums, 8 + cores);
        assert_eq!(b.heartbeat_thread_pool_nums, cores.min(32));
        assert_eq!(
            b.end_transaction_thread_pool_nums,
            (8 + 2 * cores).max(cores.min(4) * 4)
        );
        // 0: the kernel's default buffer sizes (NettySystemConfig, 4.9.3+).
        assert_eq!(b.server_socket_snd_buf_size, 0);
        assert_eq!(b.server_socket_rcv_buf_size, 0);
    }
}

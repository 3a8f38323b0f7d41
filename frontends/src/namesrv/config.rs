//! Name server settings (`namesrv.conf`, RocketMQ's `NamesrvConfig` and
//! `NettyServerConfig` keys; the liveness timings are ours — Java hard-codes them).

use std::path::PathBuf;

fn default_kv_config_path() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join("namesrv")
        .join("kvConfig.json")
}

engine::config_struct! {
    /// Name server configuration, by property key.
    pub struct NamesrvConfig {
        /// TCP port to listen on (9876); 0 picks a free port.
        listen_port: u16 = 9876 => "listenPort",
        /// Address to bind (all interfaces).
        listen_addr: String = "0.0.0.0".to_string() => "listenAddr" | "bindAddress",
        /// Add `orderTopicConf` (KV namespace ORDER_TOPIC_CONFIG) to routes (false).
        order_message_enable: bool = false => "orderMessageEnable",
        /// Where the KV config is persisted (`$HOME/namesrv/kvConfig.json`).
        kv_config_path: PathBuf = default_kv_config_path() => "kvConfigPath",
        /// A broker silent for longer than this many ms is removed (120000).
        broker_channel_expired_time: u64 = 120_000 => "brokerChannelExpiredTime",
        /// How often, in ms, silent brokers are looked for (10000).
        scan_not_active_broker_interval: u64 = 10_000 => "scanNotActiveBrokerInterval",
        /// Largest accepted frame in bytes, length field included (16 MiB).
        server_max_frame_size: usize = 16 * 1024 * 1024 => "serverMaxFrameSize" | "frameMaxLength",
        /// Connections without reads or writes for this many seconds are
        /// closed, unless an answer to them is pending (120; 0 = never).
        server_channel_max_idle_time_seconds: u64 = 120 => "serverChannelMaxIdleTimeSeconds",
        /// Ours, not Java's: connections served at once; more wait in the
        /// listen backlog (10000).
        server_max_connections: usize = 10_000 => "serverMaxConnections",
        // The rest of RocketMQ 4.9.8's NamesrvConfig and NettyServerConfig
        // keys with their defaults, so that a file using them is read
        // without "unknown key" warnings; none has an effect here.
        rocketmq_home: Option<String> = std::env::var("ROCKETMQ_HOME").ok() => "rocketmqHome",
        config_store_path: Option<String> = None => "configStorePath",
        product_env_name: String = "center".to_string() => "productEnvName",
        cluster_test: bool = false => "clusterTest",
        config_black_list: String = "configBlackList;configStorePath;kvConfigPath".to_string() => "configBlackList",
        server_worker_threads: i32 = 8 => "serverWorkerThreads",
        server_callback_executor_threads: i32 = 0 => "serverCallbackExecutorThreads",
        server_selector_threads: i32 = 3 => "serverSelectorThreads",
        server_oneway_semaphore_value: i32 = 256 => "serverOnewaySemaphoreValue",
        server_async_semaphore_value: i32 = 64 => "serverAsyncSemaphoreValue",
        server_socket_snd_buf_size: i32 = 0 => "serverSocketSndBufSize",
        server_socket_rcv_buf_size: i32 = 0 => "serverSocketRcvBufSize",
        write_buffer_high_water_mark: i32 = 0 => "writeBufferHighWaterMark",
        write_buffer_low_water_mark: i32 = 0 => "writeBufferLowWaterMark",
        server_socket_backlog: i32 = 1024 => "serverSocketBacklog",
        server_pooled_byte_buf_allocator_enable: bool = true => "serverPooledByteBufAllocatorEnable",
        use_epoll_native_selector: bool = false => "useEpollNativeSelector",
    }
}

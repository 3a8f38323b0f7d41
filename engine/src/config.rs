//! `broker.conf`-style configuration.
//!
//! RocketMQ users bring their property files with them, so keys use RocketMQ's
//! names and defaults. We are stricter than Java about values and more lenient
//! about spelling: keys and enum values match case-insensitively (Java silently
//! ignores `flushDiskType=SYNC_fLUSH`, leaving the user without the sync flush
//! they asked for; we honour it and log that the spelling differed), an unknown
//! key is a warning naming it, and a malformed value is an error naming the key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A configuration problem, always naming the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config key `{key}`: value `{value}` is not valid ({expected})")]
    BadValue {
        key: String,
        value: String,
        expected: String,
    },
    #[error("config file {path}: {why}")]
    BadFile { path: String, why: String },
    #[error("command-line argument `{arg}` is not `key=value`")]
    BadArg { arg: String },
}

/// Largest property file read (1 MiB; RocketMQ's are a few KiB).
pub const MAX_FILE_SIZE: u64 = 1 << 20;

/// The ordered `key=value` pairs of a Java `.properties` file or a command line.
#[derive(Debug, Clone, Default)]
pub struct Properties {
    entries: Vec<(String, String)>,
}

impl Properties {
    /// Parses the text of a Java `.properties` file as `java.util.Properties`
    /// does (crate java-properties): `key=value`, `key:value` or
    /// `key value`; `#` and `!` comments; `\` line continuations and
    /// escapes (`\:`, `\=`, `\t`, `\uXXXX`). Text that is not UTF-8 is read
    /// as ISO-8859-1, Java's encoding for these files; a UTF-8 byte-order
    /// mark is skipped. Values are trimmed (Java keeps trailing blanks and
    /// then fails to parse numbers silently; we do not). `source` names the
    /// text in errors.
    pub fn parse(text: &[u8], source: &str) -> Result<Self, ConfigError> {
        let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
        // The crate loses a last line that ends in a continuation `\` with
        // no line break after it; Java keeps it (dropping the `\`).
        let terminated;
        let text = if text.ends_with(b"\\") {
            terminated = [text, b"\n"].concat();
            &terminated[..]
        } else {
            text
        };
        let encoding = if std::str::from_utf8(text).is_ok() {
            encoding_rs::UTF_8
        } else {
            encoding_rs::WINDOWS_1252
        };
        let mut entries = Vec::new();
        for line in java_properties::PropertiesIter::new_with_encoding(text, encoding) {
            let line = line.map_err(|e| ConfigError::BadFile {
                path: source.to_string(),
                why: e.to_string(),
            })?;
            if let java_properties::LineContent::KVPair(key, value) = line.consume_content() {
                entries.push((key, value.trim().to_string()));
            }
        }
        Ok(Properties { entries })
    }

    /// Reads and parses a properties file (at most [`MAX_FILE_SIZE`] bytes:
    /// `-c /dev/zero` or a wrong, huge file would otherwise fill memory).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        use std::io::Read;
        let read_error = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let mut text = Vec::new();
        file.take(MAX_FILE_SIZE + 1)
            .read_to_end(&mut text)
            .map_err(read_error)?;
        if text.len() as u64 > MAX_FILE_SIZE {
            return Err(ConfigError::BadFile {
                path: path.display().to_string(),
                why: format!("larger than {MAX_FILE_SIZE} bytes; not a property file"),
            });
        }
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses `key=value` command-line arguments (one pair each, taken as
    /// written: no escapes).
    pub fn from_args<I: IntoIterator<Item = S>, S: AsRef<str>>(
        args: I,
    ) -> Result<Self, ConfigError> {
        let mut entries = Vec::new();
        for a in args {
            let a = a.as_ref();
            let pair = a.split_once('=').or_else(|| a.split_once(':'));
            match pair {
                Some((k, v)) if !k.trim().is_empty() => {
                    entries.push((k.trim().to_string(), v.trim().to_string()))
                }
                _ => return Err(ConfigError::BadArg { arg: a.to_string() }),
            }
        }
        Ok(Properties { entries })
    }

    /// Later entries (e.g. command-line overrides) win over earlier ones.
    pub fn extend(&mut self, other: Properties) {
        self.entries.extend(other.entries);
    }

    pub fn set(&mut self, key: &str, value: &str) {
        self.entries.push((key.to_string(), value.to_string()));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Last value given for `key`, matched case-insensitively.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

/// A value type a config key can hold.
pub trait ConfigValue: Sized {
    /// What a valid value looks like, for error messages.
    const EXPECTED: &'static str;
    /// An integer type: the value must also fit the key's Java type (see
    /// [`JAVA_LONG_KEYS`]).
    const INTEGER: bool = false;
    fn parse_value(s: &str) -> Option<Self>;
    fn show(&self) -> String;
}

macro_rules! number_value {
    ($($t:ty),*) => {$(
        impl ConfigValue for $t {
            const EXPECTED: &'static str = concat!("an integer (", stringify!($t), ")");
            const INTEGER: bool = true;
            fn parse_value(s: &str) -> Option<Self> { s.parse().ok() }
            fn show(&self) -> String { self.to_string() }
        }
    )*};
}
number_value!(u16, u32, u64, i32, i64, usize);

impl ConfigValue for bool {
    const EXPECTED: &'static str = "true or false";
    fn parse_value(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("true") {
            Some(true)
        } else if s.eq_ignore_ascii_case("false") {
            Some(false)
        } else {
            None
        }
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl ConfigValue for String {
    const EXPECTED: &'static str = "a string";
    fn parse_value(s: &str) -> Option<Self> {
        Some(s.to_string())
    }
    fn show(&self) -> String {
        self.clone()
    }
}

impl ConfigValue for Option<String> {
    const EXPECTED: &'static str = "a string";
    fn parse_value(s: &str) -> Option<Self> {
        Some((!s.is_empty()).then(|| s.to_string()))
    }
    fn show(&self) -> String {
        self.clone().unwrap_or_default()
    }
}

impl ConfigValue for PathBuf {
    const EXPECTED: &'static str = "a path";
    fn parse_value(s: &str) -> Option<Self> {
        (!s.is_empty()).then(|| PathBuf::from(s))
    }
    fn show(&self) -> String {
        self.display().to_string()
    }
}

/// Declares an enum whose config spelling is RocketMQ's (`SYNC_FLUSH`), matched
/// case-insensitively.
#[macro_export]
macro_rules! config_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $variant),+ }
        impl $name {
            pub const fn as_str(&self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }
        impl $crate::config::ConfigValue for $name {
            const EXPECTED: &'static str = concat!("one of", $(" ", $text),+);
            fn parse_value(s: &str) -> Option<Self> {
                $(if s.eq_ignore_ascii_case($text) { return Some(Self::$variant); })+
                None
            }
            fn show(&self) -> String { self.as_str().to_string() }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

/// What happened to one key offered to a config section.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// The key belongs to this section and its value was set.
    Set,
    /// Not this section's key.
    Unknown,
}

/// A group of settings that can be filled from properties.
pub trait ConfigSection {
    /// Sets `key` (matched case-insensitively, including RocketMQ's older
    /// spellings) if it belongs to this section.
    fn apply(&mut self, key: &str, value: &str) -> Result<Applied, ConfigError>;
    /// Every key with its effective value, for `-p`-style printing.
    fn entries(&self) -> Vec<(&'static str, String)>;
}

/// Integer keys whose RocketMQ field is a Java `long`; every other integer
/// key is a Java `int` (or ours, held to the same range).
pub const JAVA_LONG_KEYS: &[&str] = &[
    "brokerId",
    "channelNotActiveInterval",
    "consumerFallbehindThreshold",
    "filterDataCleanTimeSpan",
    "flushDelayOffsetInterval",
    "osPageCacheBusyTimeOutMills",
    "shortPollingTimeMills",
    "startAcceptSendRequestTimeStamp",
    "transactionCheckInterval",
    "transactionTimeOut",
    "waitTimeMillsInHeartbeatQueue",
    "waitTimeMillsInPullQueue",
    "waitTimeMillsInSendQueue",
    "waitTimeMillsInTransactionQueue",
];

/// Refuses an integer the key's Java field cannot hold: RocketMQ ignores such
/// a value, and ours would overflow the arithmetic built on these settings
/// (e.g. the in-memory threshold, physical memory / 100 × ratio).
fn check_java_range(key: &str, value: &str) -> Result<(), ConfigError> {
    let (min, max, expected) = if JAVA_LONG_KEYS.contains(&key) {
        (i64::MIN, i64::MAX, "an integer that fits a Java long")
    } else {
        (
            i64::from(i32::MIN),
            i64::from(i32::MAX),
            "an integer that fits a Java int (at most 2147483647)",
        )
    };
    match value.parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(()),
        _ => Err(ConfigError::BadValue {
            key: key.to_string(),
            value: value.to_string(),
            expected: expected.to_string(),
        }),
    }
}

/// Parses one value for `key`, logging when only a case-insensitive match made it valid.
pub fn parse_for<T: ConfigValue>(key: &str, value: &str) -> Result<T, ConfigError> {
    let v = T::parse_value(value).ok_or_else(|| ConfigError::BadValue {
        key: key.to_string(),
        value: value.to_string(),
        expected: T::EXPECTED.to_string(),
    })?;
    if T::INTEGER {
        check_java_range(key, value)?;
    }
    // Java matches enum values exactly and ignores a misspelt one; say
    // that we read it.
    let canonical = v.show();
    if canonical != value && canonical.eq_ignore_ascii_case(value) {
        tracing::info!("config key `{key}`: value `{value}` read as `{canonical}` (case differs)");
    }
    Ok(v)
}

/// Declares a config struct: fields with their RocketMQ key name, any older
/// aliases, a default and a doc comment. Generates `Default` and `ConfigSection`.
#[macro_export]
macro_rules! config_struct {
    ($(#[$m:meta])* pub struct $name:ident {
        $($(#[$fm:meta])* $field:ident : $ty:ty = $default:expr => $key:literal $(| $alias:literal)*),+ $(,)?
    }) => {
        $(#[$m])*
        #[derive(Debug, Clone)]
        pub struct $name { $($(#[$fm])* pub $field: $ty),+ }
        impl Default for $name {
            fn default() -> Self { Self { $($field: $default),+ } }
        }
        impl $crate::config::ConfigSection for $name {
            fn apply(&mut self, key: &str, value: &str) -> Result<$crate::config::Applied, $crate::config::ConfigError> {
                $(
                    if key.eq_ignore_ascii_case($key) $(|| key.eq_ignore_ascii_case($alias))* {
                        self.$field = $crate::config::parse_for::<$ty>($key, value)?;
                        if key != $key $(&& key != $alias)* {
                            tracing::info!("config key `{}` read as `{}` (case differs)", key, $key);
                        }
                        return Ok($crate::config::Applied::Set);
                    }
                )+
                Ok($crate::config::Applied::Unknown)
            }
            fn entries(&self) -> Vec<(&'static str, String)> {
                vec![$(($key, $crate::config::ConfigValue::show(&self.$field))),+]
            }
        }
    };
}

config_enum!(
    /// `flushDiskType`: when an append is acknowledged.
    FlushDiskType {
        /// Acknowledge once the record is in the page cache; flush in the background.
        AsyncFlush = "ASYNC_FLUSH",
        /// Acknowledge only once the record is durable (group commit).
        SyncFlush = "SYNC_FLUSH",
    }
);

config_enum!(
    /// `brokerRole`.
    BrokerRole {
        AsyncMaster = "ASYNC_MASTER",
        SyncMaster = "SYNC_MASTER",
        Slave = "SLAVE",
    }
);

config_enum!(
    /// `flushMechanism` (ours): how durability is obtained.
    FlushMechanism {
        /// The default: WRITE_FDATASYNC under SYNC_FLUSH, MSYNC under
        /// ASYNC_FLUSH. Measured here (`rmq-bench flush`, 64 writer tasks):
        /// syncing pages dirtied through the mapping takes about twice as
        /// long as syncing pages written with write(2), which is what a
        /// group commit waits for; under ASYNC_FLUSH nobody waits and the
        /// mapping saves a system call per append.
        Auto = "AUTO",
        /// `msync(MS_SYNC)` of the dirty range of the mapping (RocketMQ's way).
        Msync = "MSYNC",
        /// `fdatasync(2)` of the file; appends still go through the mapping.
        Fdatasync = "FDATASYNC",
        /// Appends are written with `write(2)` through the file descriptor
        /// (and copied into the mapping for readers), then `fdatasync`.
        WriteFdatasync = "WRITE_FDATASYNC",
        /// An io_uring `fsync(DATASYNC)` submission (crate io-uring).
        IoUring = "IO_URING",
    }
);

fn default_store_root() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join("store")
}

config_struct! {
    /// The store's settings (RocketMQ's `MessageStoreConfig`), by `broker.conf` key.
    pub struct StoreConfig {
        /// Root of the store (`$HOME/store`).
        store_path_root_dir: PathBuf = default_store_root() => "storePathRootDir",
        /// Commit log directory; empty means `<root>/commitlog`.
        store_path_commit_log: Option<String> = None => "storePathCommitLog",
        /// Size of each commit log file in bytes (1 GiB).
        mapped_file_size_commit_log: u64 = 1 << 30 => "mappedFileSizeCommitLog" | "mapedFileSizeCommitLog",
        /// Size of each consume queue file in bytes (300,000 entries of 20 bytes).
        mapped_file_size_consume_queue: u64 = 300_000 * 20 => "mappedFileSizeConsumeQueue" | "mapedFileSizeConsumeQueue",
        /// SYNC_FLUSH or ASYNC_FLUSH.
        flush_disk_type: FlushDiskType = FlushDiskType::AsyncFlush => "flushDiskType",
        /// How a flush reaches the disk (ours; AUTO picks by flushDiskType).
        flush_mechanism: FlushMechanism = FlushMechanism::Auto => "flushMechanism",
        /// ASYNC_FLUSH: ms between flush rounds.
        flush_interval_commit_log: u64 = 500 => "flushIntervalCommitLog",
        /// ASYNC_FLUSH: sleep a fixed interval (true) or wake on each append (false).
        flush_commit_log_timed: bool = true => "flushCommitLogTimed",
        /// ASYNC_FLUSH: dirty 4 KiB pages needed before a round flushes.
        flush_commit_log_least_pages: u64 = 4 => "flushCommitLogLeastPages",
        /// ASYNC_FLUSH: ms between unconditional flushes.
        flush_commit_log_thorough_interval: u64 = 10_000 => "flushCommitLogThoroughInterval",
        /// ms between consume queue flush rounds.
        flush_interval_consume_queue: u64 = 1000 => "flushIntervalConsumeQueue",
        flush_consume_queue_least_pages: u64 = 2 => "flushConsumeQueueLeastPages",
        /// ms between unconditional consume queue flushes (also checkpoint persistence).
        flush_consume_queue_thorough_interval: u64 = 60_000 => "flushConsumeQueueThoroughInterval",
        /// SYNC_FLUSH: ms an append waits for its flush before FLUSH_DISK_TIMEOUT.
        sync_flush_timeout: u64 = 5000 => "syncFlushTimeout",
        /// Touch every page of a new commit log file, then mlock and madvise(WILLNEED).
        warm_maped_file_enable: bool = false => "warmMapedFileEnable" | "warmMappedFileEnable",
        flush_least_pages_when_warm_maped_file: u64 = 4096 => "flushLeastPagesWhenWarmMapedFile",
        /// Prepare the next commit log file in the background before it is needed (ours).
        allocate_next_file: bool = true => "allocateNextFileEnable",
        /// Largest accepted message body in bytes (4 MiB).
        max_message_size: u64 = 4 * 1024 * 1024 => "maxMessageSize",
        /// Verify BODYCRC while recovering.
        check_crc_on_recover: bool = true => "checkCRCOnRecover",
        /// Hours (`04` or `04;05`) at which expired files are deleted.
        delete_when: String = "04".to_string() => "deleteWhen",
        /// Hours a commit log file is kept.
        file_reserved_time: u64 = 72 => "fileReservedTime",
        /// Disk usage percentage (10..95) past which files are deleted early.
        disk_max_used_space_ratio: u64 = 75 => "diskMaxUsedSpaceRatio",
        clean_resource_interval: u64 = 10_000 => "cleanResourceInterval",
        delete_commit_log_files_interval: u64 = 100 => "deleteCommitLogFilesInterval",
        delete_consume_queue_files_interval: u64 = 100 => "deleteConsumeQueueFilesInterval",
        destroy_maped_file_interval_forcibly: u64 = 120_000 => "destroyMapedFileIntervalForcibly",
        redelete_hanged_file_interval: u64 = 120_000 => "redeleteHangedFileInterval",
        clean_file_forcibly_enable: bool = true => "cleanFileForciblyEnable",
        max_transfer_bytes_on_message_in_memory: u64 = 262_144 => "maxTransferBytesOnMessageInMemory",
        max_transfer_count_on_message_in_memory: u64 = 32 => "maxTransferCountOnMessageInMemory",
        max_transfer_bytes_on_message_in_disk: u64 = 65_536 => "maxTransferBytesOnMessageInDisk",
        max_transfer_count_on_message_in_disk: u64 = 8 => "maxTransferCountOnMessageInDisk",
        access_message_in_memory_max_ratio: u64 = 40 => "accessMessageInMemoryMaxRatio",
        message_index_enable: bool = true => "messageIndexEnable",
        message_index_safe: bool = false => "messageIndexSafe",
        max_hash_slot_num: u64 = 5_000_000 => "maxHashSlotNum",
        max_index_num: u64 = 20_000_000 => "maxIndexNum",
        max_msgs_num_batch: u64 = 64 => "maxMsgsNumBatch",
        default_query_max_num: u64 = 32 => "defaultQueryMaxNum",
        broker_role: BrokerRole = BrokerRole::AsyncMaster => "brokerRole",
        ha_listen_port: u16 = 10912 => "haListenPort",
        ha_master_address: Option<String> = None => "haMasterAddress",
        ha_send_heartbeat_interval: u64 = 5000 => "haSendHeartbeatInterval",
        ha_housekeeping_interval: u64 = 20_000 => "haHousekeepingInterval",
        ha_transfer_batch_size: u64 = 32_768 => "haTransferBatchSize",
        ha_slave_fallbehind_max: u64 = 268_435_456 => "haSlaveFallbehindMax",
        slave_timeout: u64 = 3000 => "slaveTimeout",
        message_delay_level: String = "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h".to_string() => "messageDelayLevel",
        flush_delay_offset_interval: u64 = 10_000 => "flushDelayOffsetInterval",
        transient_store_pool_enable: bool = false => "transientStorePoolEnable",
        transient_store_pool_size: u64 = 5 => "transientStorePoolSize",
        use_reentrant_lock_when_put_message: bool = true => "useReentrantLockWhenPutMessage",
        os_page_cache_busy_time_out_mills: u64 = 1000 => "osPageCacheBusyTimeOutMills",
        duplication_enable: bool = false => "duplicationEnable",
    }
}

impl StoreConfig {
    /// `flushMechanism` with AUTO resolved for `flushDiskType`.
    pub fn effective_flush_mechanism(&self) -> FlushMechanism {
        match (self.flush_mechanism, self.flush_disk_type) {
            (FlushMechanism::Auto, FlushDiskType::SyncFlush) => FlushMechanism::WriteFdatasync,
            (FlushMechanism::Auto, FlushDiskType::AsyncFlush) => FlushMechanism::Msync,
            (m, _) => m,
        }
    }

    /// The commit log directories `storePathCommitLog` names (RocketMQ 4.9
    /// takes several, comma-separated; [`validate`](Self::validate) refuses
    /// more than one).
    fn commit_log_dirs(&self) -> Vec<&str> {
        let mut dirs: Vec<&str> = self
            .store_path_commit_log
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .collect();
        dirs.dedup();
        dirs
    }

    /// The commit log directory.
    pub fn commit_log_dir(&self) -> PathBuf {
        match self.commit_log_dirs().first() {
            Some(dir) => PathBuf::from(dir),
            None => self.store_path_root_dir.join("commitlog"),
        }
    }
    pub fn consume_queue_dir(&self) -> PathBuf {
        self.store_path_root_dir.join("consumequeue")
    }
    pub fn index_dir(&self) -> PathBuf {
        self.store_path_root_dir.join("index")
    }
    pub fn checkpoint_path(&self) -> PathBuf {
        self.store_path_root_dir.join("checkpoint")
    }
    pub fn abort_path(&self) -> PathBuf {
        self.store_path_root_dir.join("abort")
    }
    pub fn lock_path(&self) -> PathBuf {
        self.store_path_root_dir.join("lock")
    }
    pub fn config_dir(&self) -> PathBuf {
        self.store_path_root_dir.join("config")
    }

    /// Checks ranges that RocketMQ would silently clamp or crash on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, value: String, expected: &str| ConfigError::BadValue {
            key: key.to_string(),
            value,
            expected: expected.to_string(),
        };
        // Java's field is an int, and so is a blank record's size.
        if !(4096..=i32::MAX as u64).contains(&self.mapped_file_size_commit_log) {
            return Err(bad(
                "mappedFileSizeCommitLog",
                self.mapped_file_size_commit_log.to_string(),
                "4096..2147483647",
            ));
        }
        if !(20..=i32::MAX as u64).contains(&self.mapped_file_size_consume_queue) {
            return Err(bad(
                "mappedFileSizeConsumeQueue",
                self.mapped_file_size_consume_queue.to_string(),
                "20..2147483647",
            ));
        }
        // RocketMQ 4.9 spreads the files of a log over several directories
        // (file n in directory n mod count); reading only one of them would
        // see every other file missing.
        if self.commit_log_dirs().len() > 1 {
            return Err(bad(
                "storePathCommitLog",
                self.store_path_commit_log.clone().unwrap_or_default(),
                "one directory (a commit log over several is not supported)",
            ));
        }
        // Java's split drops a trailing empty part (`04;`).
        let hours = self.delete_when.trim().trim_end_matches(';');
        for h in hours.split(';') {
            if h.trim().parse::<u32>().map(|h| h > 23).unwrap_or(true) {
                return Err(bad(
                    "deleteWhen",
                    self.delete_when.clone(),
                    "hours 00..23 separated by ';'",
                ));
            }
        }
        Ok(())
    }

    /// Consume queue file size rounded up to whole 20-byte entries, as RocketMQ does.
    pub fn consume_queue_file_size(&self) -> u64 {
        self.mapped_file_size_consume_queue.div_ceil(20) * 20
    }
}

/// Applies `props` to the given sections in order; a key no section knows is
/// returned so the caller can warn about it.
pub fn apply_properties(
    props: &Properties,
    sections: &mut [&mut dyn ConfigSection],
) -> Result<Vec<String>, ConfigError> {
    // Keys spelt as a section names them are applied after older spellings
    // (aliases), so the current spelling wins when a file has both, as in
    // RocketMQ 4.9, which ignores the old one.
    let current: std::collections::HashSet<String> = sections
        .iter()
        .flat_map(|s| s.entries())
        .map(|(k, _)| k.to_ascii_lowercase())
        .collect();
    let (old, new): (Vec<_>, Vec<_>) = props
        .iter()
        .partition(|(k, _)| !current.contains(&k.to_ascii_lowercase()));
    let mut unknown = Vec::new();
    'keys: for (key, value) in old.into_iter().chain(new) {
        for s in sections.iter_mut() {
            if s.apply(key, value)? == Applied::Set {
                continue 'keys;
            }
        }
        tracing::warn!("unknown config key `{key}` ignored");
        unknown.push(key.to_string());
    }
    Ok(unknown)
}

/// Renders sections as `key=value` lines, like `mqbroker -p`.
pub fn render(sections: &[&dyn ConfigSection]) -> String {
    let mut all = BTreeMap::new();
    for s in sections {
        for (k, v) in s.entries() {
            all.insert(k, v);
        }
    }
    let mut out = String::new();
    for (k, v) in all {
        out.push_str(&format!("{k}={v}\n"));
    }
    out
}

impl FromStr for FlushDiskType {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_for("flushDiskType", s)
    }
}

impl fmt::Display for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&render(&[self]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_spellings_are_honoured() {
        let p = props(
            "# a comment\ndeletewhen=04\nflushDiskType=SYNC_fLUSH\nmapedFileSizeCommitLog = 4096\nbrokerName=broker-a\n",
        );
        let mut c = StoreConfig::default();
        let unknown = apply_properties(&p, &mut [&mut c]).unwrap();
        assert_eq!(c.flush_disk_type, FlushDiskType::SyncFlush);
        assert_eq!(c.delete_when, "04");
        assert_eq!(c.mapped_file_size_commit_log, 4096);
        assert_eq!(unknown, vec!["brokerName".to_string()]);
    }

    #[test]
    fn rocketmqs_spelling_wins_over_an_older_one_in_the_same_file() {
        // RocketMQ 4.9 ignores `mapedFileSizeCommitLog` (its pre-4.5.2
        // spelling), so a file carrying both means the new one, wherever
        // the old one stands.
        let mut c = StoreConfig::default();
        let text = "mappedFileSizeCommitLog=8192\nmapedFileSizeCommitLog=4096\n";
        apply_properties(&props(text), &mut [&mut c]).unwrap();
        assert_eq!(c.mapped_file_size_commit_log, 8192);
        // Alone, the old spelling is honoured; twice, the last one wins.
        let mut c = StoreConfig::default();
        let text = "mapedFileSizeCommitLog=4096\nmapedFileSizeCommitLog=8192\n";
        apply_properties(&props(text), &mut [&mut c]).unwrap();
        assert_eq!(c.mapped_file_size_commit_log, 8192);
    }

    #[test]
    fn auto_flush_mechanism_follows_the_flush_type_and_an_explicit_one_wins() {
        let mut c = StoreConfig::default();
        assert_eq!(c.flush_mechanism, FlushMechanism::Auto);
        assert_eq!(c.effective_flush_mechanism(), FlushMechanism::Msync);
        c.flush_disk_type = FlushDiskType::SyncFlush;
        assert_eq!(
            c.effective_flush_mechanism(),
            FlushMechanism::WriteFdatasync
        );
        apply_properties(&props("flushMechanism=msync\n"), &mut [&mut c]).unwrap();
        assert_eq!(c.effective_flush_mechanism(), FlushMechanism::Msync);
    }

    #[test]
    fn malformed_values_name_the_key() {
        let mut c = StoreConfig::default();
        let err = apply_properties(&props("syncFlushTimeout=5s"), &mut [&mut c])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("syncFlushTimeout") && err.contains("5s"),
            "{err}"
        );
        let err = apply_properties(&props("flushDiskType=SOMETIMES"), &mut [&mut c])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("flushDiskType") && err.contains("SOMETIMES"),
            "{err}"
        );
        let err = Properties::from_args(["listenPort"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`listenPort`"), "{err}");
    }

    fn props(text: &str) -> Properties {
        Properties::parse(text.as_bytes(), "test").unwrap()
    }

    fn pairs(p: &Properties) -> Vec<(&str, &str)> {
        p.iter().collect()
    }

    #[test]
    fn property_files_read_as_java_reads_them() {
        let p = props(
            "namesrvAddr=127.0.0.1:9876;\\\n    127.0.0.2:9876\nbrokerName=x\\:y\\=z\\u0041\nlistenPort 10911\n! bang\n  brokerId : 0  \n",
        );
        assert_eq!(
            pairs(&p),
            vec![
                ("namesrvAddr", "127.0.0.1:9876;127.0.0.2:9876"),
                ("brokerName", "x:y=zA"),
                ("listenPort", "10911"),
                ("brokerId", "0"),
            ]
        );
        // A byte-order mark is not part of the first key; text that is not
        // UTF-8 is ISO-8859-1, as Java reads these files.
        let p = Properties::parse(b"\xEF\xBB\xBFlistenPort=1\n", "t").unwrap();
        assert_eq!(pairs(&p), vec![("listenPort", "1")]);
        let p = Properties::parse(b"# Configuraci\xf3n\nbrokerName=b\xe9\n", "t").unwrap();
        assert_eq!(pairs(&p), vec![("brokerName", "b\u{e9}")]);
    }

    #[test]
    fn a_continuation_at_the_end_of_the_file_keeps_the_entry() {
        // Java drops the dangling `\` and keeps the entry; it was lost.
        let p = props("listenPort=1\nbrokerName=a\\");
        assert_eq!(pairs(&p), vec![("listenPort", "1"), ("brokerName", "a")]);
        let p = props("brokerName=a\\\\");
        assert_eq!(pairs(&p), vec![("brokerName", "a\\")]);
        let p = props("listenPort=1");
        assert_eq!(pairs(&p), vec![("listenPort", "1")]);
    }

    #[test]
    fn an_endless_config_file_is_refused_not_read_forever() {
        let err = Properties::load(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/dev/zero") && err.contains("larger than"),
            "{err}"
        );
        // An ordinary file still loads.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("broker.conf");
        std::fs::write(&file, "listenPort=1\n").unwrap();
        assert_eq!(
            pairs(&Properties::load(&file).unwrap()),
            vec![("listenPort", "1")]
        );
    }

    #[test]
    fn sizes_and_hours_java_cannot_hold_are_refused() {
        let check = |text: &str| {
            let mut c = StoreConfig::default();
            apply_properties(&props(text), &mut [&mut c]).map_err(|e| e.to_string())?;
            c.validate().map_err(|e| e.to_string())
        };
        assert!(check("mappedFileSizeCommitLog=4294967296")
            .unwrap_err()
            .contains("mappedFileSizeCommitLog"));
        assert!(check("mappedFileSizeCommitLog=0").is_err());
        assert!(check("mappedFileSizeConsumeQueue=19").is_err());
        assert!(check("deleteWhen=24").is_err());
        assert!(check("deleteWhen=04;").is_ok());
        assert!(check("deleteWhen=04;05").is_ok());
        assert!(check("mappedFileSizeCommitLog=2147483647").is_ok());
    }

    #[test]
    fn numbers_java_cannot_hold_are_refused() {
        let apply = |text: &str| {
            let mut c = StoreConfig::default();
            apply_properties(&props(text), &mut [&mut c]).map_err(|e| e.to_string())
        };
        // Java's field is an int: 2147483648 does not fit, and a ratio this
        // large overflowed the in-memory threshold (a panic in debug builds).
        let err = apply("accessMessageInMemoryMaxRatio=100000000000000000").unwrap_err();
        assert!(
            err.contains("accessMessageInMemoryMaxRatio") && err.contains("100000000000000000"),
            "{err}"
        );
        assert!(apply("fileReservedTime=2147483648").is_err());
        assert!(apply("fileReservedTime=2147483647").is_ok());
        // flushDelayOffsetInterval is a Java long.
        assert!(apply("flushDelayOffsetInterval=9223372036854775807").is_ok());
        assert!(apply("flushDelayOffsetInterval=9223372036854775808").is_err());
        assert!(apply("osPageCacheBusyTimeOutMills=18446744073709551615").is_err());
    }

    #[test]
    fn render_lists_every_key() {
        let c = StoreConfig::default();
        let text = c.to_string();
        assert!(text.contains("flushDiskType=ASYNC_FLUSH\n"));
        assert!(text.contains("mappedFileSizeCommitLog=1073741824\n"));
    }
}

//! Delay levels of scheduled messages (semantics.md §3) as far as the store
//! needs them: a message stored in `SCHEDULE_TOPIC_XXXX`, queue `level - 1`,
//! gets its due time (store time + the level's delay) as consume-queue tag
//! code, so a delivery service can scan each level's queue in due order.

use crate::config::ConfigError;

/// The topic scheduled messages wait in.
pub const SCHEDULE_TOPIC: &str = "SCHEDULE_TOPIC_XXXX";

/// The delays of levels 1..=n, in ms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelayLevels(Vec<i64>);

impl DelayLevels {
    /// Parses `messageDelayLevel` (`1s 5s 10s 30s 1m ... 2h`; units s, m, h, d).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let bad = |v: &str| ConfigError::BadValue {
            key: "messageDelayLevel".into(),
            value: v.to_string(),
            expected: "delays like `1s 5s 1m 2h` (units s, m, h, d)".into(),
        };
        let mut levels = Vec::new();
        for word in text.split_whitespace() {
            // The unit is the last character; it may not be ASCII (then
            // it is no unit), so split at a character boundary.
            let unit_at = word.char_indices().last().map_or(0, |(i, _)| i);
            let (num, unit) = word.split_at(unit_at);
            let n: i64 = num.parse().map_err(|_| bad(text))?;
            let ms: i64 = match unit {
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(bad(text)),
            };
            levels.push(n.checked_mul(ms).ok_or_else(|| bad(text))?);
        }
        if levels.is_empty() {
            return Err(bad(text));
        }
        Ok(DelayLevels(levels))
    }

    /// Number of levels (the max delay level).
    pub fn max_level(&self) -> i32 {
        self.0.len() as i32
    }

    /// Delay of `level` in ms, clamped into 1..=max.
    pub fn delay_ms(&self, level: i32) -> i64 {
        let i = (level.clamp(1, self.max_level()) - 1) as usize;
        self.0[i]
    }

    /// Due time of a message stored at `store_timestamp` in the queue of `queue_id`.
    pub fn due_time(&self, store_timestamp: i64, queue_id: i32) -> i64 {
        store_timestamp.saturating_add(self.delay_ms(queue_id.saturating_add(1)))
    }
}

impl Default for DelayLevels {
    fn default() -> Self {
        DelayLevels::parse("1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h")
            .unwrap_or(DelayLevels(vec![1000]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_levels() {
        let d = DelayLevels::default();
        assert_eq!(d.max_level(), 18);
        assert_eq!(d.delay_ms(1), 1000);
        assert_eq!(d.delay_ms(5), 60_000);
        assert_eq!(d.delay_ms(18), 7_200_000);
        assert_eq!(d.delay_ms(99), 7_200_000);
        assert_eq!(d.due_time(10, 0), 1010);
        assert!(DelayLevels::parse("1x").is_err());
        assert!(DelayLevels::parse("").is_err());
    }

    /// A malformed `messageDelayLevel` is a configuration error, never a
    /// panic: a unit that is not one ASCII letter (here a multi-byte
    /// character), or a delay too long for milliseconds in an i64.
    #[test]
    fn malformed_levels_are_errors() {
        assert!(DelayLevels::parse("1s 5秒").is_err());
        assert!(DelayLevels::parse("1s é").is_err());
        assert!(DelayLevels::parse("999999999999999d").is_err());
        // Long but representable delays do not overflow a due time.
        let d = DelayLevels::parse("1s 106751991167d").unwrap();
        assert_eq!(d.due_time(1_700_000_000_000, 1), i64::MAX);
    }
}

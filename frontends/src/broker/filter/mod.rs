//! SQL92 message filtering (semantics.md §8): RocketMQ's selector language
//! over message properties, evaluated by the broker when it reads messages
//! for a pull.
//!
//! * [`lexer`], [`parser`] → [`ast`]: text to a checked expression tree,
//!   following RocketMQ's SelectorParser.jj and the checks its expression
//!   factories make (errors are [`SelectorError`]);
//! * [`evaluate`]: RocketMQ's evaluation rules (NULL handling, Java type
//!   conversions);
//! * [`consumer_filters`]: the per-(topic, group) filters registered by
//!   heartbeats (ConsumerFilterManager) and a cache of compiled selectors;
//! * [`SqlFilter`]: the engine's [`MessageFilter`] for a selector — it
//!   passes every consume-queue entry and tests each record's properties;
//!   [`RetryTopicFilter`] applies a group's selectors to its retry topic
//!   (`filterSupportRetry`).
//!
//! The engine knows nothing of SQL: the pull processor hands it a
//! `SqlFilter` as a trait object.
//!
//! Compatibility: selectors mean what they mean on an Apache RocketMQ 4.9
//! broker, quirks included — text after a complete expression is ignored
//! (the grammar has no end-of-input rule), `NOT` binds tighter than `=`,
//! a bare property is a boolean cast that a string never satisfies,
//! `TRUE = a` fails while `a = TRUE` works, floating literals equal to zero
//! are refused, and a conversion error anywhere aborts the evaluation (no
//! match). The tests in `tests.rs` pin each of these. Our only additions
//! are size limits (see `parser.rs`).

pub mod ast;
pub mod consumer_filters;
pub mod evaluate;
pub mod lexer;
pub mod parser;

use std::collections::HashMap;
use std::sync::Arc;

use engine::MessageFilter;

pub use consumer_filters::{ConsumerFilters, FilterData};

/// The expression type of SQL92 subscriptions (`ExpressionType.SQL92`).
pub const SQL92: &str = "SQL92";

/// Why an expression is not a valid selector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid MessageSelector: {detail}")]
pub struct SelectorError {
    pub detail: String,
}

impl SelectorError {
    pub fn new(detail: impl Into<String>) -> Self {
        SelectorError {
            detail: detail.into(),
        }
    }

    /// An error at byte offset `at` of `src`, reported as line and column.
    pub fn at(src: &str, at: usize, detail: impl Into<String>) -> Self {
        let before = &src[..at.min(src.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        SelectorError::new(format!("{} at line {line}, column {column}", detail.into()))
    }
}

/// A compiled SQL92 selector.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    expression: String,
    tree: ast::Expr,
}

impl Selector {
    /// Parses and checks `expression`.
    pub fn compile(expression: &str) -> Result<Selector, SelectorError> {
        Ok(Selector {
            expression: expression.to_string(),
            tree: parser::parse(expression)?,
        })
    }

    /// The source text.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The checked tree.
    pub fn tree(&self) -> &ast::Expr {
        &self.tree
    }

    /// The result for a properties string (`k\x01v\x02…`): `Ok(Some(true))`
    /// selects, `Ok(None)` is SQL NULL, `Err` a Java-side exception.
    pub fn evaluate(&self, properties: &str) -> Result<Option<bool>, evaluate::EvalError> {
        Ok(
            match evaluate::evaluate(&self.tree, &evaluate::Properties(properties))? {
                Some(evaluate::Val::Bool(b)) => Some(b),
                _ => None,
            },
        )
    }

    /// Whether a message with these properties is selected: only a result
    /// of TRUE selects; NULL, FALSE and evaluation errors do not.
    pub fn matches(&self, properties: &str) -> bool {
        match self.evaluate(properties) {
            Ok(r) => r == Some(true),
            Err(e) => {
                tracing::debug!(expression = %self.expression, "message filter error: {e}");
                false
            }
        }
    }
}

/// The engine-side filter of an SQL92 subscription: every consume-queue
/// entry passes (there is no bloom-filter bit map), then each record's
/// properties are evaluated.
#[derive(Debug, Clone)]
pub struct SqlFilter(pub Arc<Selector>);

impl MessageFilter for SqlFilter {
    fn matches_tags_code(&self, _tags_code: i64) -> bool {
        true
    }

    fn matches_properties(&self, properties: &str) -> bool {
        self.0.matches(properties)
    }
}

/// `filterSupportRetry=true` (RocketMQ's ExpressionForRetryMessageFilter):
/// on a group's retry topic, each message is tested against the selector
/// the group registered for the message's original topic (its
/// `RETRY_TOPIC` property); messages of topics without one pass.
pub struct RetryTopicFilter {
    /// The retry-topic subscription's own filter (normally `*`).
    pub own: Arc<dyn MessageFilter + Send + Sync>,
    /// The group's registered selectors, by original topic.
    pub by_topic: HashMap<String, Arc<Selector>>,
}

impl MessageFilter for RetryTopicFilter {
    fn matches_tags_code(&self, tags_code: i64) -> bool {
        self.own.matches_tags_code(tags_code)
    }

    fn matches_properties(&self, properties: &str) -> bool {
        let original = evaluate::Properties(properties).get("RETRY_TOPIC");
        match original.and_then(|t| self.by_topic.get(t)) {
            Some(selector) => selector.matches(properties),
            None => self.own.matches_properties(properties),
        }
    }
}

/// Whether an expression type names SQL92 (ASCII case ignored).
pub fn is_sql92(expression_type: &str) -> bool {
    expression_type.eq_ignore_ascii_case(SQL92)
}

#[cfg(test)]
mod tests;

//! Request processors, one file per request family. Each has the same
//! shape: read the header (ext fields) and body, apply to the broker's
//! shared state or the store, build the response. Everything runs on the
//! connection's task (MACHINE.md): no thread hop between the socket and the
//! store's append.
//!
//! Header reading follows remoting.md §5: values are strings (the codec has
//! already turned JSON numbers and booleans into text); a missing or
//! unparsable required field is answered with SYSTEM_ERROR naming it.

pub mod consumer_send_back;
pub mod end_transaction;
pub mod heartbeat;
pub mod lock;
pub mod offset;
pub mod pull;
pub mod query;
pub mod send;
pub mod topic_admin;

use crate::remoting::codes::response;
use crate::remoting::RemotingCommand;

/// A processor's outcome: the response, or an error response.
pub type Reply = Result<RemotingCommand, RemotingCommand>;

/// An error response with a remark.
pub fn error(code: i32, remark: impl Into<String>) -> RemotingCommand {
    RemotingCommand::response_with_remark(code, remark)
}

/// A SUCCESS response without fields.
pub fn success() -> RemotingCommand {
    RemotingCommand::response(response::SUCCESS)
}

/// A field value, treating empty as absent.
pub fn optional<'a>(req: &'a RemotingCommand, key: &str) -> Option<&'a str> {
    req.ext(key).filter(|v| !v.is_empty())
}

/// A required string field.
pub fn required<'a>(req: &'a RemotingCommand, key: &str) -> Result<&'a str, RemotingCommand> {
    optional(req, key).ok_or_else(|| {
        error(
            response::SYSTEM_ERROR,
            format!("the custom field <{key}> is null"),
        )
    })
}

fn parse_num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, RemotingCommand> {
    v.trim().parse().map_err(|_| {
        error(
            response::SYSTEM_ERROR,
            format!("the custom field <{key}> is not a number: {v}"),
        )
    })
}

pub fn required_i32(req: &RemotingCommand, key: &str) -> Result<i32, RemotingCommand> {
    parse_num(key, required(req, key)?)
}

pub fn required_i64(req: &RemotingCommand, key: &str) -> Result<i64, RemotingCommand> {
    parse_num(key, required(req, key)?)
}

pub fn optional_i32(req: &RemotingCommand, key: &str) -> Result<Option<i32>, RemotingCommand> {
    optional(req, key).map(|v| parse_num(key, v)).transpose()
}

pub fn optional_i64(req: &RemotingCommand, key: &str) -> Result<Option<i64>, RemotingCommand> {
    optional(req, key).map(|v| parse_num(key, v)).transpose()
}

/// Java `Boolean.parseBoolean`: only case-insensitive `true` is true.
pub fn java_bool(req: &RemotingCommand, key: &str) -> bool {
    req.ext(key).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The request's JSON body, leniently parsed.
pub fn json_body(req: &RemotingCommand) -> Result<serde_json::Value, RemotingCommand> {
    fastjson::parse(&req.body).map_err(|e| {
        error(
            response::SYSTEM_ERROR,
            format!("request body is not valid JSON: {e}"),
        )
    })
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

//! RocketMQ's JSON, as Java's fastjson writes and reads it: the store's
//! `config/*.json` files and the remoting bodies (routes, registrations,
//! offset tables).
//!
//! fastjson writes the keys of integer-keyed maps unquoted
//! (`{"offsetTable":{"T@G":{0:250}}}`), which standard JSON forbids. [`parse`]
//! accepts that; [`to_pretty`] and [`to_compact`] write it for the maps the
//! caller marks. The `as_*` readers take a value the way fastjson coerces
//! it (a number may arrive as a string).

use serde_json::Value;

pub mod config_file;

/// Text that is not JSON even with bare keys quoted.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

/// Parses standard JSON, or JSON whose object keys are bare (`{0:"x"}`).
/// The error is the standard parser's, on the text as given.
pub fn parse(text: &[u8]) -> Result<Value, ParseError> {
    match serde_json::from_slice(text) {
        Ok(v) => Ok(v),
        Err(first) => serde_json::from_slice(&quote_bare_keys(text))
            .map_err(|_| ParseError(first.to_string())),
    }
}

/// Rewrites bare object keys (`{0:` / `,abc:`) as quoted strings, leaving
/// string contents untouched.
fn quote_bare_keys(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len() + 16);
    let mut i = 0;
    let mut in_str = false;
    // True right after `{` or `,` inside an object: a key may start here.
    let mut expect_key = false;
    let mut depth_is_object: Vec<bool> = Vec::new();
    while i < src.len() {
        let c = src[i];
        if in_str {
            out.push(c);
            if c == b'\\' && i + 1 < src.len() {
                out.push(src[i + 1]);
                i += 2;
                continue;
            }
            if c == b'"' {
                in_str = false;
            }
            i += 1;
            continue;
        }
        match c {
            b'"' => {
                in_str = true;
                expect_key = false;
                out.push(c);
            }
            b'{' => {
                depth_is_object.push(true);
                expect_key = true;
                out.push(c);
            }
            b'[' => {
                depth_is_object.push(false);
                expect_key = false;
                out.push(c);
            }
            b'}' | b']' => {
                depth_is_object.pop();
                expect_key = false;
                out.push(c);
            }
            b',' => {
                expect_key = depth_is_object.last().copied().unwrap_or(false);
                out.push(c);
            }
            c if c.is_ascii_whitespace() => out.push(c),
            _ if expect_key => {
                let start = i;
                while i < src.len() && src[i] != b':' && !src[i].is_ascii_whitespace() {
                    i += 1;
                }
                out.push(b'"');
                out.extend_from_slice(&src[start..i]);
                out.push(b'"');
                expect_key = false;
                continue;
            }
            _ => {
                expect_key = false;
                out.push(c);
            }
        }
        i += 1;
    }
    out
}

/// Renders `v` like fastjson's PrettyFormat (tab indentation, keys sorted),
/// as RocketMQ's config files are written. `int_keys(path)` says whether
/// the object at `path` (the keys leading to it from the root) has integer
/// keys to be written bare.
pub fn to_pretty(v: &Value, int_keys: &dyn Fn(&[&str]) -> bool) -> String {
    let mut out = String::new();
    let mut path = Vec::new();
    write_value(v, 0, &mut path, int_keys, true, &mut out);
    out
}

/// Compact rendering (what goes on the wire), with the same key rules.
pub fn to_compact(v: &Value, int_keys: &dyn Fn(&[&str]) -> bool) -> String {
    let mut out = String::new();
    let mut path = Vec::new();
    write_value(v, 0, &mut path, int_keys, false, &mut out);
    out
}

fn indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push('\t');
    }
}

fn write_value<'a>(
    v: &'a Value,
    depth: usize,
    path: &mut Vec<&'a str>,
    int_keys: &dyn Fn(&[&str]) -> bool,
    pretty: bool,
    out: &mut String,
) {
    match v {
        Value::Object(map) => {
            if map.is_empty() {
                out.push_str("{}");
                return;
            }
            let unquoted = int_keys(path);
            out.push('{');
            // Integer keys sort numerically, as a Java map of Integer would.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            if unquoted {
                entries.sort_by_key(|(k, _)| k.parse::<i64>().unwrap_or(i64::MAX));
            }
            for (i, (k, val)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if pretty {
                    out.push('\n');
                    indent(out, depth + 1);
                }
                if unquoted && k.parse::<i64>().is_ok() {
                    out.push_str(k);
                } else {
                    out.push_str(&Value::String(k.clone()).to_string());
                }
                out.push(':');
                path.push(k);
                write_value(val, depth + 1, path, int_keys, pretty, out);
                path.pop();
            }
            if pretty {
                out.push('\n');
                indent(out, depth);
            }
            out.push('}');
        }
        Value::Array(items) => {
            if items.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if pretty {
                    out.push('\n');
                    indent(out, depth + 1);
                }
                write_value(item, depth + 1, path, int_keys, pretty, out);
            }
            if pretty {
                out.push('\n');
                indent(out, depth);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The Integer-keyed maps of `consumerOffset.json` (for [`to_pretty`] and
/// [`to_compact`]): each `topic@group` table of queue id → offset under
/// `offsetTable`. Every other key fastjson writes quoted, even one of digits.
pub fn consumer_offset_int_keys(path: &[&str]) -> bool {
    path.len() == 2 && path[0] == "offsetTable"
}

/// The Integer-keyed map of `delayOffset.json`: `offsetTable`, delay level
/// → offset.
pub fn delay_offset_int_keys(path: &[&str]) -> bool {
    path == ["offsetTable"]
}

/// Reads an integer from a JSON number or numeric string.
pub fn as_i64(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Reads a boolean from a JSON bool, string (`"true"`, `"1"`) or number.
pub fn as_bool(v: Option<&Value>) -> Option<bool> {
    match v? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => Some(s.eq_ignore_ascii_case("true") || s == "1"),
        Value::Number(n) => Some(n.as_i64() == Some(1)),
        _ => None,
    }
}

/// Reads a string (numbers and booleans rendered as text).
pub fn as_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_keys_are_accepted_and_strings_left_alone() {
        let v = parse(br#"{"brokerAddrs":{0:"10.0.0.1:10911", 1 :"x:1"},"s":"a{0:b"}"#).unwrap();
        assert_eq!(v["brokerAddrs"]["0"], "10.0.0.1:10911");
        assert_eq!(v["brokerAddrs"]["1"], "x:1");
        assert_eq!(v["s"], "a{0:b");
        let v = parse(br#"{"a":{0:"x:1",1:"y"},"b":"{0:\"q\"}","c":[1, {2:3}]}"#).unwrap();
        assert_eq!(v["a"]["0"], "x:1");
        assert_eq!(v["b"], "{0:\"q\"}");
        assert_eq!(v["c"][1]["2"], 3);
        let v = parse("{\"offsetTable\":{1:5,2:0,\"a:{0\":3},\"ü\":{7:1}}".as_bytes()).unwrap();
        assert_eq!(v["offsetTable"]["a:{0"], 3);
        assert_eq!(v["ü"]["7"], 1);
    }

    #[test]
    fn malformed_text_is_an_error_from_the_standard_parser() {
        for bad in [&b"{\"a\":"[..], b"", b"{0:}", b"[1,", b"\xff"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn integer_keys_round_trip_unquoted_where_marked() {
        let text = r#"{"offsetTable":{"T@G":{0:250,1:248,10:3}}}"#;
        let v = parse(text.as_bytes()).unwrap();
        let only_inner = |p: &[&str]| p.len() == 2 && p[0] == "offsetTable";
        assert_eq!(to_compact(&v, &only_inner), text);
        let pretty = to_pretty(&v, &only_inner);
        assert!(pretty.contains("\t\t\"T@G\":{\n\t\t\t0:250,"), "{pretty}");
        assert_eq!(parse(pretty.as_bytes()).unwrap(), v);
        assert_eq!(
            to_compact(&v, &|_| false),
            r#"{"offsetTable":{"T@G":{"0":250,"1":248,"10":3}}}"#
        );
    }

    #[test]
    fn scalars_are_coerced_as_fastjson_does() {
        let v = parse(br#"{"n":"42","m":7,"f":2.0,"b":"true","one":1,"s":5}"#).unwrap();
        assert_eq!(as_i64(v.get("n")), Some(42));
        assert_eq!(as_i64(v.get("f")), Some(2));
        assert_eq!(as_i64(v.get("missing")), None);
        assert_eq!(as_bool(v.get("b")), Some(true));
        assert_eq!(as_bool(v.get("one")), Some(true));
        assert_eq!(as_string(v.get("s")).as_deref(), Some("5"));
    }
}

//! fastjson's dialect: RocketMQ writes integer map keys unquoted
//! (`{"offsetTable":{0:12}}`), which standard JSON forbids. Reading quotes
//! such keys and hands the text to serde_json; writing produces fastjson's
//! shape again (tab-indented, integer keys unquoted).

use serde_json::Value;

/// Parses fastjson output (standard JSON plus unquoted integer keys).
pub fn parse(text: &str) -> Result<Value, String> {
    serde_json::from_str(&quote_integer_keys(text)).map_err(|e| e.to_string())
}

/// Puts quotes around bare integer object keys, leaving strings untouched.
fn quote_integer_keys(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 16);
    let mut i = 0;
    let mut in_str = false;
    // Whether the next token is an object key: after `{` or a `,` inside an object.
    let mut stack: Vec<u8> = Vec::new();
    let mut expect_key = false;
    while i < b.len() {
        let c = b[i];
        if in_str {
            out.push(c as char);
            if c == b'\\' && i + 1 < b.len() {
                out.push(b[i + 1] as char);
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
            }
            b'{' | b'[' => {
                stack.push(c);
                expect_key = c == b'{';
            }
            b'}' | b']' => {
                stack.pop();
                expect_key = false;
            }
            b',' => expect_key = stack.last() == Some(&b'{'),
            b'-' | b'0'..=b'9' if expect_key => {
                let start = i;
                while i < b.len() && (b[i] == b'-' || b[i].is_ascii_digit()) {
                    i += 1;
                }
                out.push('"');
                out.push_str(&text[start..i]);
                out.push('"');
                expect_key = false;
                continue;
            }
            c if c.is_ascii_whitespace() => {}
            _ => expect_key = false,
        }
        // Non-ASCII bytes are copied through as part of the UTF-8 string.
        if c.is_ascii() {
            out.push(c as char);
            i += 1;
        } else {
            let ch = text[i..].chars().next().unwrap_or('?');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// Writes `v` as fastjson's pretty printer does: tabs, integer keys bare.
pub fn write(v: &Value) -> String {
    let mut s = String::new();
    write_value(v, 0, &mut s);
    s
}

fn write_value(v: &Value, depth: usize, s: &mut String) {
    match v {
        Value::Object(m) => {
            s.push('{');
            for (i, (k, val)) in m.iter().enumerate() {
                s.push_str(if i == 0 { "\n" } else { ",\n" });
                s.push_str(&"\t".repeat(depth + 1));
                if !k.is_empty() && k.parse::<i64>().is_ok() {
                    s.push_str(k);
                } else {
                    s.push_str(&Value::String(k.clone()).to_string());
                }
                s.push(':');
                write_value(val, depth + 1, s);
            }
            if !m.is_empty() {
                s.push('\n');
                s.push_str(&"\t".repeat(depth));
            }
            s.push('}');
        }
        other => s.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unquoted_integer_keys() {
        let v = parse("{\"offsetTable\":{\"T@G\":{0:250,1:248},\"x\":[1, 2]}}").unwrap();
        assert_eq!(v["offsetTable"]["T@G"]["1"], 248);
        assert_eq!(v["offsetTable"]["x"][1], 2);
        let v = parse("{\"offsetTable\":{1:5,2:0,\"a:{0\":3}}").unwrap();
        assert_eq!(v["offsetTable"]["a:{0"], 3);
        let back = parse(&write(&v)).unwrap();
        assert_eq!(back, v);
        assert!(write(&v).contains("\t\t1:5"));
        assert!(parse("{\"a\":").is_err());
    }
}

//! The JSON header (serialization type 0, remoting.md §3).
//!
//! Input is lenient, as real clients require: `extFields` values may be
//! strings, numbers, booleans or null (null = absent; others become their
//! canonical text), unknown keys (`serializeTypeCurrentRPC`, …) are ignored,
//! trailing whitespace (jsoncpp's `\n`) is accepted, and the integer fields
//! may also arrive as numeric strings; bytes that are not UTF-8 read as
//! U+FFFD (Java decodes the header text first). Decoding costs time and
//! memory in proportion to the header, however hostile (many keys, nested
//! values). Output is exact: keys sorted like
//! Java's fastjson, `language` as a name, every ext value a JSON string.

use std::borrow::Cow;
use std::fmt;

use bytes::{BufMut, BytesMut};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::command::{ExtFields, ExtFieldsBuilder, LanguageCode, RemotingCommand};
use super::error::CodecError;

/// Decodes a JSON header into a command (body and serialization are set by the caller).
pub(crate) fn decode(header: &[u8]) -> Result<RemotingCommand, CodecError> {
    // serde would also read a struct from an array; a header is an object.
    if header.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(CodecError::Json("header is not a JSON object".into()));
    }
    // Java reads the header with `new String(bytes, UTF_8)` first, so bytes
    // that are not UTF-8 (a GBK key from a C++ client) become U+FFFD rather
    // than failing the frame. Valid UTF-8, the usual case, is not copied.
    let text = String::from_utf8_lossy(header);
    let h: HeaderIn = serde_json::from_str(&text).map_err(|e| CodecError::Json(e.to_string()))?;
    Ok(RemotingCommand {
        code: h.code.0,
        language: h.language.0,
        version: h.version.0,
        opaque: h.opaque.0,
        flag: h.flag.0,
        remark: h.remark,
        ext_fields: h.ext_fields.0,
        body: bytes::Bytes::new(),
        serialization: super::SerializeType::Json,
    })
}

/// Appends the JSON header of `cmd` to `dst`.
pub(crate) fn encode(cmd: &RemotingCommand, dst: &mut BytesMut) {
    // Key order is alphabetical, as Java writes it.
    dst.put_slice(b"{\"code\":");
    put_int(dst, cmd.code as i64);
    if !cmd.ext_fields.is_empty() {
        dst.put_slice(b",\"extFields\":{");
        for (i, (k, v)) in cmd.ext_fields.iter().enumerate() {
            if i > 0 {
                dst.put_u8(b',');
            }
            put_str(dst, k);
            dst.put_u8(b':');
            put_str(dst, v);
        }
        dst.put_u8(b'}');
    }
    dst.put_slice(b",\"flag\":");
    put_int(dst, cmd.flag as i64);
    dst.put_slice(b",\"language\":\"");
    dst.put_slice(cmd.language.name().as_bytes());
    dst.put_slice(b"\",\"opaque\":");
    put_int(dst, cmd.opaque as i64);
    if let Some(remark) = &cmd.remark {
        dst.put_slice(b",\"remark\":");
        put_str(dst, remark);
    }
    dst.put_slice(b",\"serializeTypeCurrentRPC\":\"JSON\",\"version\":");
    put_int(dst, cmd.version as i64);
    dst.put_u8(b'}');
}

fn put_int(dst: &mut BytesMut, v: i64) {
    let mut buf = [0u8; 24];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    // Writing an i64 into 24 bytes cannot fail.
    let _ = std::io::Write::write_fmt(&mut cursor, format_args!("{v}"));
    let n = cursor.position() as usize;
    dst.put_slice(&buf[..n]);
}

/// Writes `s` as a JSON string literal (control characters as `\u00XX`).
pub(crate) fn put_str(dst: &mut BytesMut, s: &str) {
    put_json_string(dst, s, false);
}

/// Writes `s` as a JSON string literal; with `ascii_only`, non-ASCII
/// characters are escaped as `\uXXXX` UTF-16 units (standard-JSON dialect).
pub(crate) fn put_json_string(dst: &mut BytesMut, s: &str, ascii_only: bool) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    fn put_u16_escape(dst: &mut BytesMut, u: u16) {
        dst.put_slice(b"\\u");
        for shift in [12, 8, 4, 0] {
            dst.put_u8(HEX[((u >> shift) & 0xf) as usize]);
        }
    }
    dst.put_u8(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            0x80.. if ascii_only => b"",
            _ => continue,
        };
        if b >= 0x80 && !s.is_char_boundary(i) {
            // Continuation byte of a character already escaped.
            start = i + 1;
            continue;
        }
        dst.put_slice(&bytes[start..i]);
        if !esc.is_empty() {
            dst.put_slice(esc);
            start = i + 1;
        } else if b < 0x80 {
            put_u16_escape(dst, b as u16);
            start = i + 1;
        } else {
            // Start of a multi-byte character: escape its UTF-16 units.
            let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
            let mut units = [0u16; 2];
            for u in ch.encode_utf16(&mut units) {
                put_u16_escape(dst, *u);
            }
            start = i + ch.len_utf8();
        }
    }
    if start < bytes.len() {
        dst.put_slice(&bytes[start..]);
    }
    dst.put_u8(b'"');
}

#[derive(Deserialize)]
struct HeaderIn {
    #[serde(default)]
    code: LenientI32,
    #[serde(default)]
    language: Language,
    #[serde(default)]
    version: LenientI32,
    #[serde(default)]
    opaque: LenientI32,
    #[serde(default)]
    flag: LenientI32,
    #[serde(default)]
    remark: Option<String>,
    #[serde(default, rename = "extFields")]
    ext_fields: ExtIn,
}

/// An i32 given as a JSON number or a numeric string; null = 0.
#[derive(Default)]
struct LenientI32(i32);

impl<'de> Deserialize<'de> for LenientI32 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = LenientI32;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<LenientI32, E> {
                // Java would truncate a long into an int field the same way.
                Ok(LenientI32(v as i32))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<LenientI32, E> {
                Ok(LenientI32(v as i32))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<LenientI32, E> {
                v.trim()
                    .parse::<i64>()
                    .map(|n| LenientI32(n as i32))
                    .map_err(|_| E::custom(format!("`{v}` is not an integer")))
            }
            fn visit_unit<E: de::Error>(self) -> Result<LenientI32, E> {
                Ok(LenientI32(0))
            }
        }
        d.deserialize_any(V)
    }
}

/// `language`: a name, or (leniently) the numeric code; null = JAVA.
#[derive(Default)]
struct Language(LanguageCode);

impl<'de> Deserialize<'de> for Language {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Language;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a language name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Language, E> {
                Ok(Language(LanguageCode::from_name(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Language, E> {
                Ok(Language(LanguageCode::from_code(v.min(255) as u8)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Language, E> {
                Ok(Language(LanguageCode::from_code(v.clamp(0, 255) as u8)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Language, E> {
                Ok(Language(LanguageCode::Java))
            }
        }
        d.deserialize_any(V)
    }
}

/// `extFields`: an object whose values are coerced to strings; null = empty.
#[derive(Default)]
struct ExtIn(ExtFields);

impl<'de> Deserialize<'de> for ExtIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ExtIn;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_unit<E: de::Error>(self) -> Result<ExtIn, E> {
                Ok(ExtIn::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ExtIn, A::Error> {
                let mut ext = ExtFieldsBuilder::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(KeyIn(key)) = map.next_key()? {
                    let ExtValue(value) = map.next_value()?;
                    if let Some(v) = value {
                        ext.insert(&key, &v);
                    }
                }
                Ok(ExtIn(ext.finish()))
            }
        }
        d.deserialize_any(V)
    }
}

/// An ext key, borrowed from the frame when it has no escapes (serde's own
/// `Cow<str>` always allocates).
struct KeyIn<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for KeyIn<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyIn<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<KeyIn<'de>, E> {
                Ok(KeyIn(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyIn<'de>, E> {
                Ok(KeyIn(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<KeyIn<'de>, E> {
                Ok(KeyIn(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// One ext value as its canonical string; `None` for JSON null. Strings
/// without escapes are borrowed from the frame.
struct ExtValue<'de>(Option<Cow<'de, str>>);

impl<'de> Deserialize<'de> for ExtValue<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ExtValue<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number, boolean or null")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<ExtValue<'de>, E> {
                Ok(ExtValue(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ExtValue<'de>, E> {
                Ok(ExtValue(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<ExtValue<'de>, E> {
                Ok(ExtValue(Some(Cow::Owned(v))))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ExtValue<'de>, E> {
                Ok(ExtValue(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ExtValue<'de>, E> {
                Ok(ExtValue(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ExtValue<'de>, E> {
                // Integral floats (`4.0`) read as the integer Java's
                // coercion would give; others in their shortest JSON form
                // (`1e308`, not the 309 digits of Rust's `Display`, which
                // would let a header grow sixty-fold when decoded).
                if v.fract() == 0.0 && v.abs() < 9.0e15 {
                    Ok(ExtValue(Some(Cow::Owned((v as i64).to_string()))))
                } else {
                    let text = serde_json::Number::from_f64(v)
                        .map_or_else(|| v.to_string(), |n| n.to_string());
                    Ok(ExtValue(Some(Cow::Owned(text))))
                }
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ExtValue<'de>, E> {
                Ok(ExtValue(Some(Cow::Owned(
                    if v { "true" } else { "false" }.to_string(),
                ))))
            }
            fn visit_unit<E: de::Error>(self) -> Result<ExtValue<'de>, E> {
                Ok(ExtValue(None))
            }
            // Nested JSON in a string-valued map: keep its text, as
            // fastjson's coercion would.
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ExtValue<'de>, A::Error> {
                let mut text = Vec::new();
                JsonText(&mut text).visit_map(map)?;
                Ok(ExtValue(Some(Cow::Owned(json_text_string(text)?))))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<ExtValue<'de>, A::Error> {
                let mut text = Vec::new();
                JsonText(&mut text).visit_seq(seq)?;
                Ok(ExtValue(Some(Cow::Owned(json_text_string(text)?))))
            }
        }
        d.deserialize_any(V)
    }
}

/// Writes a nested JSON value back as compact text while it is parsed.
/// Building a `serde_json::Value` first would cost 32 bytes and more per
/// element: a header holding `[0,0,0,…]` would take some forty times its
/// size in memory.
struct JsonText<'a>(&'a mut Vec<u8>);

impl<'de> de::DeserializeSeed<'de> for JsonText<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for JsonText<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.0.extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.0.extend_from_slice(v.to_string().as_bytes());
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.0.extend_from_slice(v.to_string().as_bytes());
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        let text =
            serde_json::Number::from_f64(v).map_or_else(|| "null".to_string(), |n| n.to_string());
        self.0.extend_from_slice(text.as_bytes());
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        serde_json::to_writer(&mut *self.0, v).map_err(E::custom)
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.extend_from_slice(b"null");
        Ok(())
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.push(b'[');
        let mut first = true;
        loop {
            let comma_at = self.0.len();
            if !first {
                self.0.push(b',');
            }
            if seq.next_element_seed(JsonText(&mut *self.0))?.is_none() {
                self.0.truncate(comma_at);
                break;
            }
            first = false;
        }
        self.0.push(b']');
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.0.push(b'{');
        let mut first = true;
        while let Some(KeyIn(key)) = map.next_key()? {
            if !first {
                self.0.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut *self.0, &*key).map_err(de::Error::custom)?;
            self.0.push(b':');
            map.next_value_seed(JsonText(&mut *self.0))?;
        }
        self.0.push(b'}');
        Ok(())
    }
}

/// The text [`JsonText`] wrote (UTF-8: it only writes `str`s and ASCII).
fn json_text_string<E: de::Error>(text: Vec<u8>) -> Result<String, E> {
    String::from_utf8(text).map_err(E::custom)
}

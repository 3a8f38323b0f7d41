//! Frame codec: golden bytes from remoting.md, both serializations, the
//! lenient inputs real clients send (§3, §9, §10), and hostile input.

use bytes::{BufMut, Bytes, BytesMut};
use frontends::remoting::frame::{decode_frame, encode_to_bytes, FrameCodec};
use frontends::remoting::{CodecError, LanguageCode, RemotingCommand, SerializeType};
use proptest::prelude::*;

/// Builds a frame around a raw header.
fn frame(ser: u8, header: &[u8], body: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_i32((4 + header.len() + body.len()) as i32);
    b.put_u32(((ser as u32) << 24) | header.len() as u32);
    b.put_slice(header);
    b.put_slice(body);
    b
}

fn decode_one(mut buf: BytesMut) -> Result<RemotingCommand, CodecError> {
    let c = FrameCodec::default();
    let cmd = c.decode(&mut buf)?.expect("whole frame");
    assert!(buf.is_empty());
    Ok(cmd)
}

#[test]
fn worked_example_frame_layout() {
    // §1: a 60-byte JSON header and a 5-byte body → 00 00 00 45 | 00 00 00 3C.
    let header = br#"{"code":34,"flag":0,"language":"JAVA","opaque":1}"#;
    let header = &header[..];
    let pad = 60 - header.len();
    let mut h = header.to_vec();
    h.extend(std::iter::repeat_n(b' ', pad)); // trailing whitespace is legal
    assert_eq!(h.len(), 60);
    let buf = frame(0, &h, b"hello");
    assert_eq!(&buf[..8], &[0, 0, 0, 0x45, 0, 0, 0, 0x3C]);
    assert_eq!(buf.len(), 73);
    let cmd = decode_one(buf).unwrap();
    assert_eq!(cmd.code, 34);
    assert_eq!(cmd.opaque, 1);
    assert_eq!(&cmd.body[..], b"hello");
    assert_eq!(cmd.serialization, SerializeType::Json);
}

#[test]
fn binary_header_word_of_a_40_byte_header() {
    // 21 fixed bytes + 19 bytes of ext map (2+1+4+12) = 40 → 01 00 00 28.
    let cmd = RemotingCommand::request(10)
        .with_ext("a", "abcdefghijkl")
        .with_serialization(SerializeType::RocketMq);
    let bytes = encode_to_bytes(&cmd).unwrap();
    assert_eq!(&bytes[4..8], &[0x01, 0, 0, 0x28]);
    assert_eq!(&bytes[0..4], &(4u32 + 40).to_be_bytes());
    let back = decode_frame(bytes.slice(4..)).unwrap();
    assert_eq!(back, cmd);
}

#[test]
fn binary_header_golden_bytes() {
    let mut cmd = RemotingCommand::response_with_remark(17, "no")
        .with_ext("k", "v")
        .with_serialization(SerializeType::RocketMq);
    cmd.opaque = 7;
    let bytes = encode_to_bytes(&cmd).unwrap();
    let expected: Vec<u8> = [
        &[0, 0, 0, 4 + 21 + 2 + 8][..], // frame_len
        &[1, 0, 0, 21 + 2 + 8],         // header word
        &[0, 17],                       // code
        &[0],                           // JAVA
        &[0x01, 0x99],                  // 409
        &[0, 0, 0, 7],                  // opaque
        &[0, 0, 0, 1],                  // flag: response
        &[0, 0, 0, 2],
        b"no",
        &[0, 0, 0, 8],
        &[0, 1],
        b"k",
        &[0, 0, 0, 1],
        b"v",
    ]
    .concat();
    assert_eq!(&bytes[..], &expected[..]);
}

#[test]
fn json_response_golden_bytes_match_the_spec_example() {
    let mut cmd = RemotingCommand::response(0)
        .with_ext("msgId", "C0A8010A00002A9F0000000000001A2B")
        .with_ext("queueId", 1)
        .with_ext("queueOffset", 42)
        .with_ext("MSG_REGION", "DefaultRegion")
        .with_ext("TRACE_ON", true);
    cmd.opaque = 7;
    let bytes = encode_to_bytes(&cmd).unwrap();
    let expected = r#"{"code":0,"extFields":{"msgId":"C0A8010A00002A9F0000000000001A2B","queueId":"1","queueOffset":"42","MSG_REGION":"DefaultRegion","TRACE_ON":"true"},"flag":1,"language":"JAVA","opaque":7,"serializeTypeCurrentRPC":"JSON","version":409}"#;
    assert_eq!(&bytes[8..], expected.as_bytes());
    assert_eq!(&bytes[4..8], &(expected.len() as u32).to_be_bytes());
}

#[test]
fn json_escapes_property_separators_and_omits_null_remark() {
    let cmd = RemotingCommand::request(310).with_ext("i", "TAGS\u{1}TagA\u{2}WAIT\u{1}true");
    let bytes = encode_to_bytes(&cmd).unwrap();
    let text = std::str::from_utf8(&bytes[8..]).unwrap();
    assert!(
        text.contains(r#""i":"TAGS\u0001TagA\u0002WAIT\u0001true""#),
        "{text}"
    );
    assert!(!text.contains("remark"));
    let back = decode_frame(bytes.slice(4..)).unwrap();
    assert_eq!(back.ext("i"), Some("TAGS\u{1}TagA\u{2}WAIT\u{1}true"));
}

#[test]
fn java_request_example_decodes() {
    let h = r#"{"code":310,"extFields":{"a":"PG","b":"TopicTest","c":"TBW102","d":"4","e":"1","f":"0","g":"1700000000000","h":"0","i":"TAGS\u0001TagA\u0002WAIT\u0001true","j":"0","k":"false","m":"false","n":"broker-a"},"flag":0,"language":"JAVA","opaque":7,"serializeTypeCurrentRPC":"JSON","version":409}"#;
    let cmd = decode_one(frame(0, h.as_bytes(), b"body")).unwrap();
    assert_eq!(cmd.code, 310);
    assert_eq!(cmd.version, 409);
    assert_eq!(cmd.language, LanguageCode::Java);
    assert_eq!(cmd.ext("g"), Some("1700000000000"));
    assert_eq!(cmd.ext("i"), Some("TAGS\u{1}TagA\u{2}WAIT\u{1}true"));
    assert_eq!(cmd.remark, None);
    assert_eq!(&cmd.body[..], b"body");
}

#[test]
fn cpp_client_header_is_accepted() {
    // jsoncpp FastWriter: numbers for ints, "0"/"1" booleans, empty remark,
    // credential fields, trailing newline.
    let h = "{\"code\":10,\"extFields\":{\"AccessKey\":\"\",\"OnsChannel\":\"\",\"Signature\":\"\",\"batch\":\"1\",\"bornTimestamp\":\"1700000000000\",\"defaultTopicQueueNums\":4,\"flag\":0,\"queueId\":-1,\"sysFlag\":0,\"topic\":\"T\"},\"flag\":0,\"language\":\"CPP\",\"opaque\":5,\"remark\":\"\",\"version\":63}\n";
    let cmd = decode_one(frame(0, h.as_bytes(), b"")).unwrap();
    assert_eq!(cmd.language, LanguageCode::Cpp);
    assert_eq!(cmd.version, 63);
    assert_eq!(cmd.remark.as_deref(), Some(""));
    assert_eq!(cmd.ext("queueId"), Some("-1"));
    assert_eq!(cmd.ext("defaultTopicQueueNums"), Some("4"));
    assert_eq!(cmd.ext("batch"), Some("1"));
    assert_eq!(cmd.ext("Signature"), Some(""));
}

#[test]
fn ali_ons_header_with_booleans_nulls_and_no_remark_is_accepted() {
    let h = r#"{"code":310,"language":"JAVA","opaque":3,"flag":0,"version":121,"extFields":{"a":"PG","e":2,"g":1700000000000,"k":false,"x":null,"nested":{"z":1},"arr":[1,2]}}"#;
    let cmd = decode_one(frame(0, h.as_bytes(), b"")).unwrap();
    assert_eq!(cmd.ext("e"), Some("2"));
    assert_eq!(cmd.ext("g"), Some("1700000000000"));
    assert_eq!(cmd.ext("k"), Some("false"));
    assert_eq!(cmd.ext("x"), None, "null is absent");
    assert_eq!(cmd.ext("nested"), Some(r#"{"z":1}"#));
    assert_eq!(cmd.ext("arr"), Some("[1,2]"));
}

#[test]
fn minimal_and_odd_headers_are_accepted() {
    // No extFields, unknown keys, unknown language, whitespace around.
    let h = " \r\n{\"code\":34,\"flag\":0,\"language\":\"KOTLIN\",\"opaque\":1,\"version\":409,\"future\":{\"a\":[1]}}\t\n ";
    let cmd = decode_one(frame(0, h.as_bytes(), b"")).unwrap();
    assert!(cmd.ext_fields.is_empty());
    assert_eq!(cmd.language, LanguageCode::Other);
    // extFields null, numeric strings for integers.
    let h = r#"{"code":"105","opaque":"9","extFields":null}"#;
    let cmd = decode_one(frame(0, h.as_bytes(), b"")).unwrap();
    assert_eq!((cmd.code, cmd.opaque), (105, 9));
}

#[test]
fn binary_zero_length_strings_are_absent() {
    let mut h = BytesMut::new();
    h.put_i16(11);
    h.put_u8(9); // GO
    h.put_i16(409);
    h.put_i32(1);
    h.put_i32(0);
    h.put_i32(0); // no remark
    h.put_i32(2 + 1 + 4 + 2 + 1 + 4);
    h.put_u16(1);
    h.put_slice(b"a");
    h.put_i32(0); // empty value → absent
    h.put_u16(1);
    h.put_slice(b"b");
    h.put_i32(0);
    let cmd = decode_one(frame(1, &h, b"")).unwrap();
    assert_eq!(cmd.language, LanguageCode::Go);
    assert_eq!(cmd.remark, None);
    assert!(cmd.ext_fields.is_empty());
    assert_eq!(cmd.serialization, SerializeType::RocketMq);
}

#[test]
fn binary_negative_ext_length_means_no_ext_fields_as_in_java() {
    // RocketMQ 4.9.8 reads the map only when its length is positive: a
    // negative one is a request without ext fields, answered like any
    // other (a negative remark or string length fails the frame there too).
    let mut h = BytesMut::new();
    h.put_i16(30);
    h.put_u8(0);
    h.put_i16(409);
    h.put_i32(7);
    h.put_i32(0);
    h.put_i32(0);
    h.put_i32(-1);
    let cmd = decode_one(frame(1, &h, b"body")).unwrap();
    assert_eq!((cmd.code, cmd.opaque), (30, 7));
    assert!(cmd.ext_fields.is_empty());
    assert_eq!(&cmd.body[..], b"body");
}

#[test]
fn partial_frames_wait_for_more_bytes() {
    let cmd = RemotingCommand::request(34).with_body(Bytes::from_static(b"0123456789"));
    let bytes = encode_to_bytes(&cmd).unwrap();
    let codec = FrameCodec::default();
    for cut in 0..bytes.len() {
        let mut buf = BytesMut::from(&bytes[..cut]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None, "cut at {cut}");
        assert_eq!(buf.len(), cut, "nothing consumed");
    }
    // Two frames back to back decode one at a time.
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&bytes);
    buf.extend_from_slice(&bytes);
    assert!(codec.decode(&mut buf).unwrap().is_some());
    assert!(codec.decode(&mut buf).unwrap().is_some());
    assert!(buf.is_empty());
}

#[test]
fn oversized_frames_are_rejected_before_arriving() {
    let codec = FrameCodec::default();
    // Declares 16 MiB − 4 + 1: one byte over Java's limit.
    let mut buf = BytesMut::new();
    buf.put_i32(16 * 1024 * 1024 - 3);
    assert!(matches!(
        codec.check(&buf),
        Err(CodecError::FrameTooLarge { .. })
    ));
    // Exactly at the limit is fine (just incomplete).
    let mut buf = BytesMut::new();
    buf.put_i32(16 * 1024 * 1024 - 4);
    assert_eq!(codec.check(&buf), Ok(None));
    // A configurable cap.
    let small = FrameCodec::new(64);
    let big = encode_to_bytes(&RemotingCommand::request(1).with_body(vec![0u8; 100])).unwrap();
    assert!(matches!(
        small.decode(&mut BytesMut::from(&big[..])),
        Err(CodecError::FrameTooLarge { .. })
    ));
    // And the encoder refuses to produce one.
    let mut out = BytesMut::new();
    assert!(small
        .encode(
            &RemotingCommand::request(1).with_body(vec![0u8; 100]),
            &mut out
        )
        .is_err());
    assert!(out.is_empty());
}

#[test]
fn malformed_frames_are_errors() {
    let codec = FrameCodec::default();
    let mut neg = BytesMut::new();
    neg.put_i32(-1);
    assert!(matches!(
        codec.check(&neg),
        Err(CodecError::BadFrameLength(-1))
    ));
    let mut tiny = BytesMut::new();
    tiny.put_i32(2);
    tiny.put_u16(0);
    assert!(codec.check(&tiny).is_err());
    // Header longer than the frame.
    let mut b = BytesMut::new();
    b.put_i32(8);
    b.put_u32(100);
    b.put_u32(0);
    assert!(matches!(
        decode_one(b),
        Err(CodecError::BadHeaderLength { .. })
    ));
    // Unknown serialization type.
    assert!(matches!(
        decode_one(frame(2, b"{}", b"")),
        Err(CodecError::BadSerializeType(2))
    ));
    // Not JSON / truncated JSON / wrong shapes.
    for h in [
        &b"garbage"[..],
        b"{\"code\":1",
        b"[]",
        b"{\"extFields\":\"x\"}",
        b"",
    ] {
        assert!(
            matches!(decode_one(frame(0, h, b"")), Err(CodecError::Json(_))),
            "{h:?}"
        );
    }
    // Binary: lengths pointing past the header.
    let mut h = BytesMut::new();
    h.put_i16(1);
    h.put_u8(0);
    h.put_i16(1);
    h.put_i32(1);
    h.put_i32(0);
    h.put_i32(1000);
    assert!(matches!(
        decode_one(frame(1, &h, b"")),
        Err(CodecError::Binary(_))
    ));
    let mut h2 = BytesMut::from(&h[..13]);
    h2.put_i32(-5);
    assert!(matches!(
        decode_one(frame(1, &h2, b"")),
        Err(CodecError::Binary(_))
    ));
    assert!(matches!(
        decode_one(frame(1, &h[..5], b"")),
        Err(CodecError::Binary(_))
    ));
}

#[test]
fn float_ext_values_keep_a_short_text() {
    // 5 bytes of `1e308` must not become 309 digits: a 16 MiB header of
    // such values would take half a gigabyte once decoded.
    let h =
        r#"{"code":15,"extFields":{"big":1e308,"tiny":-1e-300,"half":1.5,"four":4.0,"huge":1e20}}"#;
    let cmd = decode_one(frame(0, h.as_bytes(), b"")).unwrap();
    for (key, value) in [("big", 1e308), ("tiny", -1e-300), ("huge", 1e20)] {
        let text = cmd.ext(key).unwrap();
        assert!(text.len() <= 24, "{key}: {text}");
        assert_eq!(text.parse::<f64>(), Ok(value), "{key}: {text}");
    }
    assert_eq!(cmd.ext("half"), Some("1.5"));
    assert_eq!(cmd.ext("four"), Some("4"));
}

#[test]
fn json_header_bytes_that_are_not_utf8_are_replaced_as_java_does() {
    // Java decodes the header with `new String(bytes, UTF_8)` before
    // parsing, so a GBK-encoded key from a C++ client is read with U+FFFD
    // in place of the bad bytes; the request is served, not the
    // connection closed.
    let mut h = br#"{"code":12,"opaque":3,"remark":"r"#.to_vec();
    h.extend_from_slice(&[0xC4, 0xE3]);
    h.extend_from_slice(br#"","extFields":{"topic":"T","key":""#);
    h.extend_from_slice(&[0xB9, 0xFA, b'k']);
    h.extend_from_slice(br#""}}"#);
    let cmd = decode_one(frame(0, &h, b"")).unwrap();
    assert_eq!((cmd.code, cmd.opaque), (12, 3));
    assert_eq!(cmd.ext("topic"), Some("T"));
    assert_eq!(cmd.ext("key"), Some("\u{fffd}\u{fffd}k"));
    assert_eq!(cmd.remark.as_deref(), Some("r\u{fffd}\u{fffd}"));
}

/// Decodes `frame` on its own thread; `None` if that takes longer than `limit`.
fn decode_within(frame: BytesMut, limit: std::time::Duration) -> Option<RemotingCommand> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(decode_one(frame));
    });
    let cmd = rx.recv_timeout(limit).ok()?;
    Some(cmd.expect("decodes"))
}

#[test]
fn a_header_of_many_ext_fields_decodes_in_linear_time() {
    // 300 000 distinct keys fit in a 3.5 MB header. Java keeps them in a
    // HashMap; a linear scan per inserted key would take this many squared
    // halves of comparisons — hours for a 16 MB frame, on a runtime thread.
    const N: usize = 300_000;
    let mut json = String::from("{\"code\":15,\"extFields\":{");
    let mut entries = BytesMut::new();
    for i in 0..N {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&format!("\"k{i}\":\"{i}\""));
        let (k, v) = (format!("k{i}"), i.to_string());
        entries.put_u16(k.len() as u16);
        entries.put_slice(k.as_bytes());
        entries.put_i32(v.len() as i32);
        entries.put_slice(v.as_bytes());
    }
    json.push_str("}}");
    let mut binary = BytesMut::new();
    binary.put_i16(15);
    binary.put_u8(0);
    binary.put_i16(409);
    binary.put_i32(1);
    binary.put_i32(0);
    binary.put_i32(0);
    binary.put_i32(entries.len() as i32);
    binary.put_slice(&entries);
    for (ser, header) in [(0u8, json.as_bytes()), (1, &binary[..])] {
        let cmd = decode_within(frame(ser, header, b""), std::time::Duration::from_secs(5))
            .unwrap_or_else(|| panic!("serialization {ser}: decoding took over 5 s"));
        assert_eq!(cmd.ext_fields.len(), N);
        assert_eq!(cmd.ext("k0"), Some("0"));
        assert_eq!(cmd.ext("k299999"), Some("299999"));
    }
}

#[test]
fn a_repeated_ext_key_keeps_its_place_and_takes_the_last_value() {
    // Past the size where a decoder may switch to an index, too.
    for n in [3usize, 100] {
        let mut json = String::from("{\"code\":15,\"extFields\":{");
        for i in 0..n {
            json.push_str(&format!("\"k{i}\":\"{i}\","));
        }
        json.push_str("\"k1\":\"last\"}}");
        let cmd = decode_one(frame(0, json.as_bytes(), b"")).unwrap();
        assert_eq!(cmd.ext_fields.len(), n);
        assert_eq!(cmd.ext("k1"), Some("last"));
        let keys: Vec<&str> = cmd.ext_fields.iter().map(|(k, _)| k).collect();
        assert_eq!(keys[1], "k1");
        assert_eq!(keys[n - 1], format!("k{}", n - 1));
    }
}

fn arb_command() -> impl Strategy<Value = RemotingCommand> {
    (
        (
            any::<i16>(),
            0usize..LanguageCode::ALL.len(),
            any::<i16>(),
            any::<i32>(),
            any::<i32>(),
        ),
        proptest::option::of("[^\u{0}]{1,20}"),
        proptest::collection::vec(("[a-zA-Z_]{1,8}", "\\PC{1,16}"), 0..6),
        proptest::collection::vec(any::<u8>(), 0..64),
        any::<bool>(),
    )
        .prop_map(
            |((code, lang, version, opaque, flag), remark, ext, body, binary)| {
                let mut cmd = RemotingCommand::request(code as i32);
                cmd.language = LanguageCode::ALL[lang];
                cmd.version = version as i32;
                cmd.opaque = opaque;
                cmd.flag = flag;
                cmd.remark = remark;
                cmd.ext_fields = ext.into_iter().collect();
                cmd.body = Bytes::from(body);
                cmd.serialization = if binary {
                    SerializeType::RocketMq
                } else {
                    SerializeType::Json
                };
                cmd
            },
        )
}

proptest! {
    #[test]
    fn round_trip(cmd in arb_command()) {
        let bytes = encode_to_bytes(&cmd).unwrap();
        let back = decode_frame(bytes.slice(4..)).unwrap();
        prop_assert_eq!(back, cmd);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256), ser in 0u8..3) {
        let _ = decode_one_lenient(frame(ser, &data, b""));
        let mut raw = BytesMut::from(&data[..]);
        let _ = FrameCodec::default().decode(&mut raw);
    }
}

fn decode_one_lenient(mut buf: BytesMut) -> Result<Option<RemotingCommand>, CodecError> {
    FrameCodec::default().decode(&mut buf)
}

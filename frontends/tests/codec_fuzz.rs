//! The frame decoder under random input: random mutations of valid frames
//! of both serializations and random JSON-ish headers never panic, and
//! decoding a frame allocates at most a small multiple of its size (so a
//! frame under the 16 MiB cap cannot make us allocate without bound).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::{BufMut, Bytes, BytesMut};
use frontends::remoting::frame::{encode_to_bytes, FrameCodec};
use frontends::remoting::{LanguageCode, RemotingCommand, SerializeType};
use proptest::prelude::*;

/// Counts the bytes allocated by the current thread (tests run on
/// several threads at once).
struct CountingAlloc;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATED.try_with(|a| a.set(a.get() + layout.size()));
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATED.try_with(|a| a.set(a.get() + new_size));
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Bytes this thread allocates while decoding `frame` (all of them, also
/// those freed again: an upper bound of the peak).
fn decode_counting(frame: &[u8]) -> usize {
    let mut buf = BytesMut::from(frame);
    let before = ALLOCATED.with(Cell::get);
    let result = FrameCodec::default().decode(&mut buf);
    let after = ALLOCATED.with(Cell::get);
    drop(result);
    after - before
}

/// What decoding a frame of `len` bytes may allocate.
fn allocation_bound(len: usize) -> usize {
    16 * len + 4096
}

fn valid_frame(
    code: i16,
    ext: Vec<(String, String)>,
    remark: Option<String>,
    body: Vec<u8>,
    binary: bool,
) -> Bytes {
    let mut cmd = RemotingCommand::request(code as i32);
    cmd.language = LanguageCode::Cpp;
    cmd.remark = remark;
    cmd.ext_fields = ext.into_iter().collect();
    cmd.body = Bytes::from(body);
    if binary {
        cmd.serialization = SerializeType::RocketMq;
    }
    encode_to_bytes(&cmd).unwrap()
}

fn arb_valid_frame() -> impl Strategy<Value = Bytes> {
    (
        any::<i16>(),
        proptest::collection::vec(("[a-zA-Z]{1,6}", "\\PC{0,12}"), 0..8),
        proptest::option::of("\\PC{0,12}"),
        proptest::collection::vec(any::<u8>(), 0..32),
        any::<bool>(),
    )
        .prop_map(|(code, ext, remark, body, binary)| valid_frame(code, ext, remark, body, binary))
}

/// A mutation of a frame: overwrite, insert or delete some bytes, or
/// overwrite one of its length fields with an extreme value.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Word(usize, i32),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1usize..8).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (
            any::<usize>(),
            prop_oneof![
                Just(0),
                Just(-1),
                Just(i32::MIN),
                Just(i32::MAX),
                Just(0x00FF_FFFF),
                Just(0x0100_0000),
                any::<i32>()
            ]
        )
            .prop_map(|(i, w)| Mutation::Word(i, w)),
    ]
}

fn mutate(frame: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut f = frame.to_vec();
    for m in mutations {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
        match m {
            Mutation::Set(i, b) if !f.is_empty() => {
                let i = at(*i, f.len());
                f[i] = *b;
            }
            Mutation::Insert(i, bytes) => {
                let i = at(*i, f.len() + 1);
                f.splice(i..i, bytes.iter().copied());
            }
            Mutation::Delete(i, n) if !f.is_empty() => {
                let i = at(*i, f.len());
                let end = (i + n).min(f.len());
                f.drain(i..end);
            }
            Mutation::Word(i, w) if f.len() >= 4 => {
                // Mostly the frame length, header word and binary lengths.
                let i = at(*i, f.len() - 3);
                f[i..i + 4].copy_from_slice(&w.to_be_bytes());
            }
            _ => {}
        }
    }
    f
}

/// JSON-ish header text built from JSON tokens, so that the parser gets
/// far into headers of odd shapes.
fn arb_json_header() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just("{".to_string()),
        Just("}".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just(",".to_string()),
        Just(":".to_string()),
        Just("\"code\"".to_string()),
        Just("\"extFields\"".to_string()),
        Just("\"language\"".to_string()),
        Just("\"remark\"".to_string()),
        Just("\"flag\"".to_string()),
        Just("null".to_string()),
        Just("true".to_string()),
        Just("1e308".to_string()),
        Just("-0.5".to_string()),
        Just("99999999999999999999".to_string()),
        Just("\"\\ud800\"".to_string()),
        "\"[a-z]{0,4}\"",
        "-?[0-9]{1,4}",
    ];
    proptest::collection::vec(token, 0..40).prop_map(|t| {
        let mut h = b"{\"code\":1,\"extFields\":{\"a\":".to_vec();
        h.extend_from_slice(t.concat().as_bytes());
        h
    })
}

fn json_frame(header: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_i32((4 + header.len()) as i32);
    b.put_u32(header.len() as u32);
    b.put_slice(header);
    b.to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn mutated_frames_never_panic_and_allocate_in_proportion(
        frame in arb_valid_frame(),
        mutations in proptest::collection::vec(arb_mutation(), 1..4),
    ) {
        let f = mutate(&frame, &mutations);
        let allocated = decode_counting(&f);
        prop_assert!(allocated <= allocation_bound(f.len()), "{allocated} bytes for a {}-byte frame", f.len());
    }

    #[test]
    fn json_headers_of_odd_shapes_never_panic_and_allocate_in_proportion(header in arb_json_header()) {
        let f = json_frame(&header);
        let allocated = decode_counting(&f);
        prop_assert!(allocated <= allocation_bound(f.len()), "{allocated} bytes for a {}-byte frame", f.len());
    }
}

/// Large hostile headers: the ratio must hold at scale too.
#[test]
fn large_hostile_headers_allocate_in_proportion() {
    let n = 200_000;
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let many = |item: &str, open: &str, close: &str| {
        let mut h = format!("{{\"code\":1,\"extFields\":{{\"a\":{open}");
        for i in 0..n {
            if i > 0 {
                h.push(',');
            }
            h.push_str(item);
        }
        h.push_str(close);
        h.push_str("}}");
        h.into_bytes()
    };
    cases.push(("array of zeros", many("0", "[", "]")));
    cases.push(("array of empty arrays", many("[]", "[", "]")));
    cases.push(("array of empty objects", many("{}", "[", "]")));
    let mut floats = String::from("{\"code\":1,\"extFields\":{");
    for i in 0..n {
        if i > 0 {
            floats.push(',');
        }
        floats.push_str(&format!("\"{i}\":1e308"));
    }
    floats.push_str("}}");
    cases.push(("float values", floats.into_bytes()));
    let mut repeated = String::from("{\"code\":1,\"extFields\":{");
    for i in 0..n {
        if i > 0 {
            repeated.push(',');
        }
        repeated.push_str("\"k\":true");
    }
    repeated.push_str("}}");
    cases.push(("one key repeated", repeated.into_bytes()));
    for (what, header) in cases {
        let f = json_frame(&header);
        let allocated = decode_counting(&f);
        assert!(
            allocated <= allocation_bound(f.len()),
            "{what}: {allocated} bytes for a {}-byte frame",
            f.len()
        );
    }
}

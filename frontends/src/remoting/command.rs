//! [`RemotingCommand`]: one request or response of the remoting protocol
//! (remoting.md §2), independent of how its header was serialized.
//!
//! The "custom header" of a request lives in [`ExtFields`], an ordered
//! string-to-string map: every value is a string on output whatever the peer
//! sent (C++ clients ignore non-string values), and numbers/booleans sent by
//! lenient clients were already converted to their canonical text on input.

use bytes::Bytes;

/// Bit 0 of `flag`: the command is a response.
pub const FLAG_RESPONSE: i32 = 0x1;
/// Bit 1 of `flag`: the request is oneway (no response).
pub const FLAG_ONEWAY: i32 = 0x2;

/// The version ordinal we stamp into every command we create (Java 4.9.8).
pub const OUR_VERSION: i32 = 409;

/// Version ordinals from `MQVersion.Version` that change behaviour.
pub mod version {
    pub const V3_0_11: i32 = 37;
    pub const V3_1_8: i32 = 63;
    pub const V3_4_9: i32 = 121;
    pub const V4_6_0: i32 = 333;
    pub const V4_9_4: i32 = 401;
    pub const V4_9_8: i32 = 409;
}

/// How a command's header is serialized (the top byte of the header word).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SerializeType {
    /// Type 0: JSON text. Understood by every client.
    #[default]
    Json,
    /// Type 1: RocketMQ's binary header (Java peers only).
    RocketMq,
}

impl SerializeType {
    /// The type byte on the wire.
    pub const fn code(self) -> u8 {
        match self {
            SerializeType::Json => 0,
            SerializeType::RocketMq => 1,
        }
    }

    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(SerializeType::Json),
            1 => Some(SerializeType::RocketMq),
            _ => None,
        }
    }
}

macro_rules! languages {
    ($($variant:ident = $code:literal, $name:literal;)+) => {
        /// The sender's language (`LanguageCode`), binary byte / JSON name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub enum LanguageCode {
            #[default]
            $($variant),+
        }

        impl LanguageCode {
            /// Every known language, in code order.
            pub const ALL: &'static [LanguageCode] = &[$(LanguageCode::$variant),+];

            /// The byte used by the binary header.
            pub const fn code(self) -> u8 {
                match self { $(LanguageCode::$variant => $code),+ }
            }

            /// The name used by the JSON header.
            pub const fn name(self) -> &'static str {
                match self { $(LanguageCode::$variant => $name),+ }
            }

            /// Unknown codes decode as [`LanguageCode::Other`]: the language is
            /// informational and never a reason to drop a request.
            pub const fn from_code(code: u8) -> Self {
                match code { $($code => LanguageCode::$variant,)+ _ => LanguageCode::Other }
            }

            /// Unknown names decode as [`LanguageCode::Other`].
            pub fn from_name(name: &str) -> Self {
                match name { $($name => LanguageCode::$variant,)+ _ => LanguageCode::Other }
            }
        }
    };
}

languages! {
    Java = 0, "JAVA";
    Cpp = 1, "CPP";
    DotNet = 2, "DOTNET";
    Python = 3, "PYTHON";
    Delphi = 4, "DELPHI";
    Erlang = 5, "ERLANG";
    Ruby = 6, "RUBY";
    Other = 7, "OTHER";
    Http = 8, "HTTP";
    Go = 9, "GO";
    Php = 10, "PHP";
    Oms = 11, "OMS";
    Rust = 12, "RUST";
}

/// The `extFields` map: insertion-ordered, keys unique.
///
/// Headers hold a handful of entries, so a linear lookup beats hashing and
/// keeps the order we emit deterministic. Keys and values live in one text
/// buffer (entries are spans into it): decoding a 15-field send header costs
/// two allocations instead of thirty.
#[derive(Clone, Default)]
pub struct ExtFields {
    /// Boxed so that a command stays small (commands travel in `Result`s)
    /// and an empty map allocates nothing.
    inner: Option<Box<ExtText>>,
}

#[derive(Clone, Default)]
struct ExtText {
    text: String,
    entries: Vec<Entry>,
}

/// Byte ranges of one key and its value in `ExtText::text`.
#[derive(Debug, Clone, Copy)]
struct Entry {
    key: (u32, u32),
    value: (u32, u32),
}

impl ExtText {
    fn span(&self, (from, to): (u32, u32)) -> &str {
        &self.text[from as usize..to as usize]
    }

    fn push_text(&mut self, s: &str) -> (u32, u32) {
        let from = self.text.len() as u32;
        self.text.push_str(s);
        (from, self.text.len() as u32)
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.entries.iter().position(|e| self.span(e.key) == key)
    }

    /// Sets the value of the entry at `existing` (where `key` was found),
    /// or appends an entry for `key`, to the text `write_value` appends.
    /// A replaced value's old text stays in the buffer until the map is
    /// dropped; replacing is rare (tests, a few rewrites, repeated keys).
    fn put(&mut self, existing: Option<usize>, key: &str, write_value: impl FnOnce(&mut String)) {
        let key = match existing {
            Some(_) => (0, 0),
            None => self.push_text(key),
        };
        let from = self.text.len() as u32;
        write_value(&mut self.text);
        let value = (from, self.text.len() as u32);
        match existing {
            Some(i) => self.entries[i].value = value,
            None => self.entries.push(Entry { key, value }),
        }
    }
}

impl ExtFields {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        ExtFields {
            inner: Some(Box::new(ExtText {
                text: String::with_capacity(n * 24),
                entries: Vec::with_capacity(n),
            })),
        }
    }

    fn text_mut(&mut self) -> &mut ExtText {
        self.inner.get_or_insert_with(Default::default)
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        let t = self.inner.as_deref()?;
        t.position(key).map(|i| t.span(t.entries[i].value))
    }

    /// Sets `key`, replacing an earlier value in place (order kept).
    pub fn insert(&mut self, key: impl AsRef<str>, value: impl AsRef<str>) {
        let value = value.as_ref();
        self.set(key.as_ref(), |text| text.push_str(value));
    }

    /// Sets `key` to `value`'s text, formatted straight into the buffer.
    pub fn insert_display(&mut self, key: &str, value: impl std::fmt::Display) {
        use std::fmt::Write as _;
        // Writing into a String cannot fail.
        self.set(key, |text| {
            let _ = write!(text, "{value}");
        });
    }

    /// Sets `key` to the text `write_value` appends to the buffer.
    fn set(&mut self, key: &str, write_value: impl FnOnce(&mut String)) {
        let t = self.text_mut();
        let existing = t.position(key);
        t.put(existing, key, write_value);
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let t = self.inner.as_deref_mut()?;
        let i = t.position(key)?;
        let e = t.entries.remove(i);
        Some(t.span(e.value).to_string())
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, |t| t.entries.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.inner
            .as_deref()
            .into_iter()
            .flat_map(|t| t.entries.iter().map(|e| (t.span(e.key), t.span(e.value))))
    }
}

/// Builds the [`ExtFields`] of a decoded header in linear time, with
/// [`ExtFields::insert`]'s meaning (a repeated key keeps its first place
/// and takes the last value). `insert` scans the entries for the key,
/// which is right for the dozen fields of a real header but quadratic in a
/// hostile one: the 1.6 million keys a 16 MiB frame can hold would keep a
/// runtime thread busy for hours. Past [`Self::INDEX_FROM`] entries the
/// builder looks keys up in a hash index instead (Java keeps them in a
/// HashMap).
pub(crate) struct ExtFieldsBuilder {
    ext: ExtFields,
    index: Option<std::collections::HashMap<Box<str>, usize>>,
}

impl ExtFieldsBuilder {
    /// Below this many entries a scan is cheaper than hashing.
    const INDEX_FROM: usize = 32;

    pub(crate) fn with_capacity(n: usize) -> Self {
        ExtFieldsBuilder {
            // An empty map allocates nothing.
            ext: if n == 0 {
                ExtFields::new()
            } else {
                ExtFields::with_capacity(n.min(Self::INDEX_FROM))
            },
            index: None,
        }
    }

    pub(crate) fn insert(&mut self, key: &str, value: &str) {
        let t = self.ext.text_mut();
        let existing = match &self.index {
            Some(index) => index.get(key).copied(),
            None => t.position(key),
        };
        t.put(existing, key, |text| text.push_str(value));
        if existing.is_some() {
            return;
        }
        let count = t.entries.len();
        if let Some(index) = &mut self.index {
            index.insert(key.into(), count - 1);
        } else if count > Self::INDEX_FROM {
            let index = t
                .entries
                .iter()
                .enumerate()
                .map(|(i, e)| (t.span(e.key).into(), i))
                .collect();
            self.index = Some(index);
        }
    }

    pub(crate) fn finish(self) -> ExtFields {
        self.ext
    }
}

impl PartialEq for ExtFields {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for ExtFields {}

impl std::fmt::Debug for ExtFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for ExtFields {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut ext = ExtFields::new();
        for (k, v) in iter {
            ext.insert(k, v);
        }
        ext
    }
}

/// One request or response.
///
/// `code` is the request code for requests and the result code for
/// responses; `opaque` matches a response to its request on one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotingCommand {
    pub code: i32,
    pub language: LanguageCode,
    pub version: i32,
    pub opaque: i32,
    pub flag: i32,
    pub remark: Option<String>,
    pub ext_fields: ExtFields,
    pub body: Bytes,
    /// How the header was (or will be) serialized.
    pub serialization: SerializeType,
}

impl RemotingCommand {
    /// A new request with our language and version; `opaque` is assigned by
    /// whoever sends it.
    pub fn request(code: i32) -> Self {
        RemotingCommand {
            code,
            language: LanguageCode::Java,
            version: OUR_VERSION,
            opaque: 0,
            flag: 0,
            remark: None,
            ext_fields: ExtFields::new(),
            body: Bytes::new(),
            serialization: SerializeType::Json,
        }
    }

    /// A new response with result `code`. The connection copies the request's
    /// opaque and serialization into it when it is sent as an answer.
    pub fn response(code: i32) -> Self {
        RemotingCommand {
            flag: FLAG_RESPONSE,
            ..Self::request(code)
        }
    }

    /// A response with a remark (typically an error message).
    pub fn response_with_remark(code: i32, remark: impl Into<String>) -> Self {
        Self::response(code).with_remark(remark)
    }

    pub fn with_remark(mut self, remark: impl Into<String>) -> Self {
        self.remark = Some(remark.into());
        self
    }

    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    pub fn with_ext(mut self, key: impl AsRef<str>, value: impl std::fmt::Display) -> Self {
        self.ext_fields.insert_display(key.as_ref(), value);
        self
    }

    pub fn with_serialization(mut self, s: SerializeType) -> Self {
        self.serialization = s;
        self
    }

    /// Marks a request oneway.
    pub fn oneway(mut self) -> Self {
        self.flag |= FLAG_ONEWAY;
        self
    }

    pub fn is_response(&self) -> bool {
        self.flag & FLAG_RESPONSE != 0
    }

    pub fn is_oneway(&self) -> bool {
        self.flag & FLAG_ONEWAY != 0
    }

    /// The ext field `key`, if present.
    pub fn ext(&self, key: &str) -> Option<&str> {
        self.ext_fields.get(key)
    }

    /// Turns a handler's response into the answer to `request`: copies the
    /// opaque and the serialization, sets the response flag.
    pub fn make_answer_to(&mut self, request: &RemotingCommand) {
        self.opaque = request.opaque;
        self.serialization = request.serialization;
        self.flag |= FLAG_RESPONSE;
        self.flag &= !FLAG_ONEWAY;
    }
}

//! The ROCKETMQ binary header (serialization type 1, remoting.md §4).
//!
//! `code i16 · language u8 · version i16 · opaque i32 · flag i32 ·
//! remark_len i32 · remark · ext_len i32 · (key_len u16 · key · val_len i32 · val)*`.
//! Zero-length strings decode as absent and a negative `ext_len` as no ext
//! fields (4.9.8 behaviour); every length is checked against the bytes
//! actually present before it is used.

use bytes::{BufMut, BytesMut};

use super::command::{ExtFieldsBuilder, LanguageCode, RemotingCommand, SerializeType};
use super::error::CodecError;

/// Decodes a binary header (body and serialization are set by the caller).
pub(crate) fn decode(header: &[u8]) -> Result<RemotingCommand, CodecError> {
    let mut r = Reader { buf: header };
    let code = r.i16()? as i32;
    let language = LanguageCode::from_code(r.u8()?);
    let version = r.i16()? as i32;
    let opaque = r.i32()?;
    let flag = r.i32()?;
    let remark_len = r.len_i32()?;
    let remark = r.string(remark_len)?;
    // RocketMQ reads the map only when its length is positive: a negative
    // one means no ext fields, not a broken frame.
    let ext_len = usize::try_from(r.i32()?).unwrap_or(0);
    let mut map = Reader {
        buf: r.take(ext_len)?,
    };
    let mut ext_fields = ExtFieldsBuilder::with_capacity(if ext_len == 0 { 0 } else { 8 });
    while !map.buf.is_empty() {
        let klen = map.u16()? as usize;
        let key = map.string(klen)?;
        let vlen = map.len_i32()?;
        let value = map.string(vlen)?;
        if let (Some(k), Some(v)) = (key, value) {
            ext_fields.insert(&k, &v);
        }
    }
    Ok(RemotingCommand {
        code,
        language,
        version,
        opaque,
        flag,
        remark,
        ext_fields: ext_fields.finish(),
        body: bytes::Bytes::new(),
        serialization: SerializeType::RocketMq,
    })
}

/// Appends the binary header of `cmd` to `dst`.
pub(crate) fn encode(cmd: &RemotingCommand, dst: &mut BytesMut) {
    dst.put_i16(cmd.code as i16);
    dst.put_u8(cmd.language.code());
    dst.put_i16(cmd.version as i16);
    dst.put_i32(cmd.opaque);
    dst.put_i32(cmd.flag);
    match &cmd.remark {
        Some(r) if !r.is_empty() => {
            dst.put_i32(r.len() as i32);
            dst.put_slice(r.as_bytes());
        }
        _ => dst.put_i32(0),
    }
    let ext_len: usize = cmd
        .ext_fields
        .iter()
        .map(|(k, v)| 2 + k.len() + 4 + v.len())
        .sum();
    dst.put_i32(ext_len as i32);
    for (k, v) in cmd.ext_fields.iter() {
        dst.put_u16(k.len() as u16);
        dst.put_slice(k.as_bytes());
        dst.put_i32(v.len() as i32);
        dst.put_slice(v.as_bytes());
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if n > self.buf.len() {
            return Err(CodecError::Binary("length exceeds header"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.array::<1>()?[0])
    }
    fn i16(&mut self) -> Result<i16, CodecError> {
        Ok(i16::from_be_bytes(self.array()?))
    }
    fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32, CodecError> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    /// An i32 length that must be non-negative.
    fn len_i32(&mut self) -> Result<usize, CodecError> {
        let n = self.i32()?;
        usize::try_from(n).map_err(|_| CodecError::Binary("negative length"))
    }
    /// `n` bytes of UTF-8 (invalid sequences replaced); zero length is absent.
    fn string(&mut self, n: usize) -> Result<Option<String>, CodecError> {
        let s = self.take(n)?;
        if s.is_empty() {
            return Ok(None);
        }
        // Java decodes with replacement characters; so do we.
        Ok(Some(String::from_utf8_lossy(s).into_owned()))
    }
}

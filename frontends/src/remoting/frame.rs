//! The TCP frame (remoting.md §1):
//! `frame_len i32 · header_word i32 · header · body`, where
//! `frame_len = 4 + header_len + body_len` and `header_word` carries the
//! serialization type in its top byte and the header length in the low 24 bits.
//!
//! [`FrameCodec::check`] answers "is a whole frame here?" from the first
//! bytes alone, validating the declared length against the size cap before
//! anything is allocated, so partial or hostile input never makes us
//! allocate hugely or panic. Decoding a complete frame splits it off the
//! read buffer without copying the body.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::command::{RemotingCommand, SerializeType};
use super::error::CodecError;
use super::{binary_header, json_header};

/// Java's default `com.rocketmq.remoting.frameMaxLength`: the whole frame,
/// including its 4-byte length field.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;

/// Encodes and decodes frames under a size cap.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    /// Largest accepted frame, counting the 4-byte length field (Java's
    /// `frameMaxLength`; default 16 MiB, so `frame_len` ≤ 16 MiB − 4).
    pub max_frame_size: usize,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
        }
    }
}

impl FrameCodec {
    pub fn new(max_frame_size: usize) -> Self {
        FrameCodec { max_frame_size }
    }

    /// Is a whole frame at the start of `buf`? `Ok(Some(n))`: yes, it is `n`
    /// bytes long (length field included). `Ok(None)`: not yet. `Err`: the
    /// declared length is invalid or over the cap — the stream is unusable.
    pub fn check(&self, buf: &[u8]) -> Result<Option<usize>, CodecError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let frame_len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if frame_len < 4 {
            return Err(CodecError::BadFrameLength(frame_len));
        }
        let total = frame_len as usize + 4;
        if total > self.max_frame_size {
            return Err(CodecError::FrameTooLarge {
                len: total,
                max: self.max_frame_size,
            });
        }
        Ok((buf.len() >= total).then_some(total))
    }

    /// Bytes still missing for the frame at the start of `buf` to be whole,
    /// if its length is known and valid (a hint for read-buffer sizing).
    pub fn missing(&self, buf: &[u8]) -> Option<usize> {
        if buf.len() < 4 {
            return None;
        }
        let frame_len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let total = usize::try_from(frame_len).ok()? + 4;
        (total <= self.max_frame_size).then(|| total.saturating_sub(buf.len()))
    }

    /// Takes one whole frame off the front of `buf` and decodes it;
    /// `Ok(None)` if the frame is not complete yet (nothing consumed).
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<RemotingCommand>, CodecError> {
        let Some(total) = self.check(buf)? else {
            return Ok(None);
        };
        let frame = buf.split_to(total).freeze();
        decode_frame(frame.slice(4..)).map(Some)
    }

    /// Appends `cmd` as one frame to `dst`. On error (the frame would exceed
    /// the cap, so no peer would accept it) `dst` is left unchanged.
    pub fn encode(&self, cmd: &RemotingCommand, dst: &mut BytesMut) -> Result<(), CodecError> {
        let start = dst.len();
        dst.reserve(8 + 256 + cmd.body.len());
        dst.put_u64(0); // frame_len and header_word, patched below
        match cmd.serialization {
            SerializeType::Json => json_header::encode(cmd, dst),
            SerializeType::RocketMq => binary_header::encode(cmd, dst),
        }
        let header_len = dst.len() - start - 8;
        let frame_len = 4 + header_len + cmd.body.len();
        if header_len > 0x00FF_FFFF || frame_len + 4 > self.max_frame_size {
            dst.truncate(start);
            return Err(CodecError::FrameTooLarge {
                len: frame_len + 4,
                max: self.max_frame_size,
            });
        }
        dst.put_slice(&cmd.body);
        let word = ((cmd.serialization.code() as u32) << 24) | header_len as u32;
        dst[start..start + 4].copy_from_slice(&(frame_len as u32).to_be_bytes());
        dst[start + 4..start + 8].copy_from_slice(&word.to_be_bytes());
        Ok(())
    }
}

/// Decodes a frame given without its length field (`header_word · header · body`).
/// The body shares `frame`'s memory.
pub fn decode_frame(mut frame: Bytes) -> Result<RemotingCommand, CodecError> {
    let frame_len = frame.len();
    if frame_len < 4 {
        return Err(CodecError::BadFrameLength(frame_len as i32));
    }
    let word = frame.get_u32();
    let ser_code = (word >> 24) as u8;
    let header_len = (word & 0x00FF_FFFF) as usize;
    let serialization =
        SerializeType::from_code(ser_code).ok_or(CodecError::BadSerializeType(ser_code))?;
    if header_len > frame.len() {
        return Err(CodecError::BadHeaderLength {
            header_len,
            frame_len,
        });
    }
    let header = frame.split_to(header_len);
    let mut cmd = match serialization {
        SerializeType::Json => json_header::decode(&header)?,
        SerializeType::RocketMq => binary_header::decode(&header)?,
    };
    cmd.body = frame;
    cmd.serialization = serialization;
    Ok(cmd)
}

/// Encodes `cmd` as one frame with the default cap (tests and tools).
pub fn encode_to_bytes(cmd: &RemotingCommand) -> Result<Bytes, CodecError> {
    let mut buf = BytesMut::new();
    FrameCodec::default().encode(cmd, &mut buf)?;
    Ok(buf.freeze())
}

//! The HA wire format (cluster.md §4.1, §4.2). Big-endian, no framing
//! beyond these fixed sizes.
//!
//! * slave → master: a stream of 8-byte offsets (`i64`), each "I hold
//!   everything below this"; the master acts on the last complete one;
//! * master → slave: `[startOffset i64][bodySize i32][bodySize bytes]`,
//!   the raw commit log bytes `[startOffset, startOffset + bodySize)`;
//!   a heartbeat is a header with `bodySize = 0`.

/// Size of one slave report.
pub const REPORT_LEN: usize = 8;
/// Size of a data frame's header.
pub const HEADER_LEN: usize = 12;

/// A slave's report of its commit log max offset.
pub fn report(offset: u64) -> [u8; REPORT_LEN] {
    (offset as i64).to_be_bytes()
}

/// The header of a data frame carrying `body_len` bytes from `offset`.
pub fn header(offset: u64, body_len: usize) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&(offset as i64).to_be_bytes());
    h[8..].copy_from_slice(&(body_len as i32).to_be_bytes());
    h
}

/// A data frame's header as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub offset: u64,
    pub body_len: usize,
}

/// Why a header is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("negative offset {0} in a data frame")]
    NegativeOffset(i64),
    #[error("body size {0} out of range (at most {1})")]
    BodySize(i32, usize),
}

/// Parses a frame header; `max_body` bounds what we are willing to buffer.
pub fn parse_header(h: &[u8; HEADER_LEN], max_body: usize) -> Result<FrameHeader, ProtocolError> {
    let offset = i64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]);
    let size = i32::from_be_bytes([h[8], h[9], h[10], h[11]]);
    if offset < 0 {
        return Err(ProtocolError::NegativeOffset(offset));
    }
    if size < 0 || size as usize > max_body {
        return Err(ProtocolError::BodySize(size, max_body));
    }
    Ok(FrameHeader {
        offset: offset as u64,
        body_len: size as usize,
    })
}

/// Collects slave reports from arbitrary read chunks: keeps a partial value
/// across reads and yields the last complete one of each chunk.
#[derive(Debug, Default)]
pub struct ReportReader {
    partial: [u8; REPORT_LEN],
    have: usize,
}

impl ReportReader {
    /// Feeds bytes as read; returns the last complete report among them.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Option<i64> {
        let mut last = None;
        while !bytes.is_empty() {
            let n = (REPORT_LEN - self.have).min(bytes.len());
            self.partial[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == REPORT_LEN {
                last = Some(i64::from_be_bytes(self.partial));
                self.have = 0;
            }
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_bounds() {
        let h = header(1 << 40, 32768);
        assert_eq!(&h[..8], &(1i64 << 40).to_be_bytes());
        assert_eq!(
            parse_header(&h, 1 << 20),
            Ok(FrameHeader {
                offset: 1 << 40,
                body_len: 32768
            })
        );
        assert!(parse_header(&h, 1000).is_err());
        let mut neg = h;
        neg[0] = 0x80;
        assert!(parse_header(&neg, 1 << 20).is_err());
        let mut bad = header(0, 0);
        bad[8] = 0xff;
        assert!(parse_header(&bad, 1 << 20).is_err());
    }

    #[test]
    fn reports_split_anywhere() {
        let mut stream = Vec::new();
        for v in [5u64, 70, 1 << 33] {
            stream.extend_from_slice(&report(v));
        }
        let mut r = ReportReader::default();
        assert_eq!(r.feed(&stream[..3]), None);
        assert_eq!(r.feed(&stream[3..17]), Some(70));
        assert_eq!(r.feed(&stream[17..23]), None);
        assert_eq!(r.feed(&stream[23..]), Some(1 << 33));
        assert_eq!(r.feed(&[]), None);
    }
}

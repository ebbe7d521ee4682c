//! Protobuf fields read and written by hand, for the codec's per-message paths:
//! reading borrows from the frame (no string or message is allocated for fields the
//! codec only passes on), and writing puts a whole SECMSG — nested messages
//! included — into one buffer whose lengths are computed first (prost would encode
//! each nested message into a buffer of its own and copy it into its parent).
//!
//! The bytes written are the ones prost writes for the same message: fields in tag
//! order, minimal varints, present optional fields written even when empty.

use prost::encoding::{decode_key, decode_varint, encoded_len_varint, key_len, WireType};

/// Why bytes are not the message they should be.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Protobuf(#[from] prost::DecodeError),
    #[error("a field is longer than its message")]
    Truncated,
    #[error("a string field is not UTF-8")]
    NotUtf8,
}

/// One field's value as read: a varint, or the bytes of a length-delimited field.
/// Fixed-width fields are skipped by [`Fields`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// The fields of one encoded message, in order, borrowed from it.
#[derive(Debug)]
pub struct Fields<'a> {
    buf: &'a [u8],
}

/// Iterates the fields of `buf`; a malformed field ends the iteration with an error.
pub fn fields(buf: &[u8]) -> Fields<'_> {
    Fields { buf }
}

impl<'a> Fields<'a> {
    fn read(&mut self) -> Result<Option<(u32, Value<'a>)>, ReadError> {
        loop {
            if self.buf.is_empty() {
                return Ok(None);
            }
            let (tag, wire_type) = decode_key(&mut self.buf)?;
            match wire_type {
                WireType::Varint => {
                    return Ok(Some((tag, Value::Varint(decode_varint(&mut self.buf)?))))
                }
                WireType::LengthDelimited => {
                    let len = usize::try_from(decode_varint(&mut self.buf)?).unwrap_or(usize::MAX);
                    if len > self.buf.len() {
                        return Err(ReadError::Truncated);
                    }
                    let (value, rest) = self.buf.split_at(len);
                    self.buf = rest;
                    return Ok(Some((tag, Value::Bytes(value))));
                }
                other => prost::encoding::skip_field(
                    other,
                    tag,
                    &mut self.buf,
                    prost::encoding::DecodeContext::default(),
                )?,
            }
        }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.read() {
            Ok(field) => field.map(Ok),
            Err(e) => {
                self.buf = &[];
                Some(Err(e))
            }
        }
    }
}

/// A string field's text, or an error when it is not UTF-8.
pub fn text(bytes: &[u8]) -> Result<&str, ReadError> {
    std::str::from_utf8(bytes).map_err(|_| ReadError::NotUtf8)
}

/// Encoded length of a varint field (uint64, int64 ≥ 0, int32 ≥ 0, bool, enum).
pub fn varint_len(tag: u32, value: u64) -> usize {
    key_len(tag) + encoded_len_varint(value)
}

/// Encoded length of a length-delimited field holding `len` bytes.
pub fn bytes_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// Appends a varint field.
pub fn put_varint(buf: &mut Vec<u8>, tag: u32, value: u64) {
    prost::encoding::encode_key(tag, WireType::Varint, buf);
    prost::encoding::encode_varint(value, buf);
}

/// Appends the key and length of a length-delimited field whose `len` bytes follow.
pub fn put_len(buf: &mut Vec<u8>, tag: u32, len: usize) {
    prost::encoding::encode_key(tag, WireType::LengthDelimited, buf);
    prost::encoding::encode_varint(len as u64, buf);
}

/// Appends a length-delimited field holding `bytes`.
pub fn put_bytes(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    put_len(buf, tag, bytes.len());
    buf.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_what_they_write_and_stop_at_bad_bytes() {
        let mut buf = Vec::new();
        put_varint(&mut buf, 1, 300);
        put_bytes(&mut buf, 2, b"abc");
        prost::encoding::fixed64::encode(3, &7, &mut buf);
        put_varint(&mut buf, 19_000, u64::MAX);
        assert_eq!(
            buf.len(),
            varint_len(1, 300) + bytes_len(2, 3) + 9 + varint_len(19_000, u64::MAX)
        );
        let read: Vec<_> = fields(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            read,
            [
                (1, Value::Varint(300)),
                (2, Value::Bytes(b"abc")),
                (19_000, Value::Varint(u64::MAX))
            ]
        );
        // A length past the end: one error, then the end.
        let mut bad = Vec::new();
        put_len(&mut bad, 2, 10);
        bad.push(b'x');
        let mut it = fields(&bad);
        assert!(matches!(it.next(), Some(Err(_))));
        assert!(it.next().is_none());
        assert!(text(&[0xff]).is_err());
    }
}

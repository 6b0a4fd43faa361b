//! A streaming CARv1 reader. `fvm_ipld_car`'s reader holds each block in
//! memory; an FRC-0108 snapshot's F3 section is one block of any size, so this
//! reader can stream past a block while hashing it, and reads every other block
//! (bounded in size) whole. Every block is checked against its CID.

use std::io::{self, Read};

use cid::Cid;
use fvm_ipld_car::CarHeader;

use crate::chain::cbor;

/// The largest block read into memory (Filecoin's blocks are far smaller).
pub const MAX_BLOCK_BYTES: u64 = 8 << 20;
const MAX_HEADER_BYTES: u64 = 1 << 20;
const BLAKE2B_256: u64 = 0xb220;

#[derive(Debug, thiserror::Error)]
pub enum CarError {
    #[error("not a CARv1 stream: {0}")]
    Header(String),
    #[error("the CAR stream is truncated or unreadable after {offset} bytes: {reason}")]
    Io { offset: u64, reason: io::Error },
    #[error("block at byte {offset} is malformed: {reason}")]
    Frame { offset: u64, reason: String },
    #[error("block {cid} is {len} bytes, over the {MAX_BLOCK_BYTES}-byte limit")]
    TooLarge { cid: Cid, len: u64 },
    #[error(transparent)]
    Block(#[from] cbor::Error),
}

#[derive(Debug)]
pub enum Frame {
    Block {
        cid: Cid,
        data: Vec<u8>,
    },
    /// A block streamed past (and verified) without keeping its data.
    Skipped {
        cid: Cid,
        len: u64,
    },
}

pub struct CarStream<R> {
    reader: R,
    pub roots: Vec<Cid>,
    /// Bytes consumed so far (after decompression).
    pub offset: u64,
}

impl<R> std::fmt::Debug for CarStream<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CarStream")
            .field("roots", &self.roots)
            .field("offset", &self.offset)
            .finish()
    }
}

impl<R: Read> CarStream<R> {
    pub fn open(mut reader: R) -> Result<Self, CarError> {
        let len = read_varint(&mut reader)
            .map_err(|e| CarError::Header(e.to_string()))?
            .ok_or_else(|| CarError::Header("the stream is empty".into()))?;
        if len > MAX_HEADER_BYTES {
            return Err(CarError::Header(format!("a header of {len} bytes")));
        }
        let mut bytes = vec![0; len as usize];
        reader
            .read_exact(&mut bytes)
            .map_err(|e| CarError::Header(e.to_string()))?;
        let header: CarHeader =
            fvm_ipld_encoding::from_slice(&bytes).map_err(|e| CarError::Header(e.to_string()))?;
        if header.version != 1 {
            return Err(CarError::Header(format!(
                "version {} (only CARv1 is read)",
                header.version
            )));
        }
        if header.roots.is_empty() {
            return Err(CarError::Header("no roots".into()));
        }
        let offset = varint_len(len) + len;
        Ok(Self {
            reader,
            roots: header.roots,
            offset,
        })
    }

    /// The next block, `None` at the end. `skip` says which blocks to stream past.
    pub fn next_frame(&mut self, skip: impl Fn(&Cid) -> bool) -> Result<Option<Frame>, CarError> {
        let start = self.offset;
        let io_error = |reason| CarError::Io {
            offset: start,
            reason,
        };
        let Some(len) = read_varint(&mut self.reader).map_err(io_error)? else {
            return Ok(None);
        };
        let mut body = (&mut self.reader).take(len);
        let cid = Cid::read_bytes(&mut body).map_err(|e| CarError::Frame {
            offset: start,
            reason: format!("unreadable CID: {e}"),
        })?;
        let data_len = body.limit();
        self.offset = start + varint_len(len) + len;
        if skip(&cid) && cid.hash().code() == BLAKE2B_256 {
            let mut hasher = blake2b_simd::Params::new().hash_length(32).to_state();
            let copied = io::copy(&mut body, &mut HashWriter(&mut hasher)).map_err(io_error)?;
            if copied != data_len {
                return Err(io_error(io::ErrorKind::UnexpectedEof.into()));
            }
            if hasher.finalize().as_bytes() != cid.hash().digest() {
                return Err(cbor::Error::HashMismatch { cid }.into());
            }
            return Ok(Some(Frame::Skipped { cid, len: data_len }));
        }
        if data_len > MAX_BLOCK_BYTES {
            return Err(CarError::TooLarge { cid, len: data_len });
        }
        let mut data = Vec::with_capacity(data_len as usize);
        body.read_to_end(&mut data).map_err(io_error)?;
        if data.len() as u64 != data_len {
            return Err(io_error(io::ErrorKind::UnexpectedEof.into()));
        }
        cbor::verify(&cid, &data)?;
        Ok(Some(Frame::Block { cid, data }))
    }
}

struct HashWriter<'a>(&'a mut blake2b_simd::State);

impl io::Write for HashWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An unsigned varint; `None` on a clean end of stream before its first byte
/// (an end inside the varint is a truncation, and an error).
fn read_varint(reader: &mut impl Read) -> io::Result<Option<u64>> {
    let mut buffer = unsigned_varint::encode::u64_buffer();
    for i in 0..buffer.len() {
        let mut byte = [0u8];
        if reader.read(&mut byte)? == 0 {
            return if i == 0 {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        buffer[i] = byte[0];
        if byte[0] & 0x80 == 0 {
            let (value, _) = unsigned_varint::decode::u64(&buffer[..=i])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            return Ok(Some(value));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "varint too long",
    ))
}

fn varint_len(value: u64) -> u64 {
    unsigned_varint::encode::u64(value, &mut unsigned_varint::encode::u64_buffer()).len() as u64
}

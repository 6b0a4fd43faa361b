//! Where an import reads from: a file or an http(s) URL, plain or zstd
//! (multi-frame), recognised by its magic bytes rather than its name.

use std::{
    fs::File,
    io::{self, BufReader, Read},
};

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const READ_BUFFER: usize = 1 << 20;

pub type Source = Box<dyn Read + Send>;

pub fn open(location: &str) -> io::Result<Source> {
    let raw: Source = if location.starts_with("http://") || location.starts_with("https://") {
        let response = ureq::get(location).call().map_err(io::Error::other)?;
        Box::new(
            response
                .into_body()
                .into_with_config()
                .limit(u64::MAX)
                .reader(),
        )
    } else {
        Box::new(File::open(location)?)
    };
    decompressed(raw)
}

/// Reads through zstd when the stream starts with its magic number. The zstd
/// decoder goes on across frames, as multi-frame snapshots need.
pub fn decompressed(mut raw: Source) -> io::Result<Source> {
    let mut magic = Vec::with_capacity(ZSTD_MAGIC.len());
    (&mut raw)
        .take(ZSTD_MAGIC.len() as u64)
        .read_to_end(&mut magic)?;
    let is_zstd = magic == ZSTD_MAGIC;
    let stream = BufReader::with_capacity(READ_BUFFER, io::Cursor::new(magic).chain(raw));
    Ok(if is_zstd {
        Box::new(BufReader::with_capacity(
            READ_BUFFER,
            zstd::Decoder::with_buffer(stream)?,
        ))
    } else {
        Box::new(stream)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plain_and_multi_frame_zstd() -> anyhow::Result<()> {
        let data = b"hello, filecoin".repeat(100);
        let mut plain = String::new();
        decompressed(Box::new(io::Cursor::new(data.clone())))?.read_to_string(&mut plain)?;
        assert_eq!(plain.as_bytes(), data);

        let (first, second) = data.split_at(700);
        let mut frames = zstd::encode_all(first, 3)?;
        frames.extend(zstd::encode_all(second, 3)?);
        let mut out = Vec::new();
        decompressed(Box::new(io::Cursor::new(frames)))?.read_to_end(&mut out)?;
        assert_eq!(out, data);
        Ok(())
    }
}

//! Content types: from a file name's extension, else from the first bytes.
//!
//! The byte rules follow the WHATWG MIME sniffing table as Go's
//! `http.DetectContentType` applies it (the behaviour kubo's gateway has),
//! cut down to what a video gateway serves, plus HLS playlists and MPEG-TS
//! segments, which that table does not know.

/// How many leading bytes [`sniff`] looks at.
pub const SNIFF_LEN: usize = 512;

/// The content type for a file `name` by its extension, if known.
pub fn by_name(name: &str) -> Option<String> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    // mime_guess maps these to types players do not accept.
    let fixed = match ext.as_str() {
        "m3u8" => Some("application/vnd.apple.mpegurl"),
        "ts" => Some("video/mp2t"),
        "m4s" => Some("video/iso.segment"),
        _ => None,
    };
    if let Some(t) = fixed {
        return Some(t.to_owned());
    }
    let mime = mime_guess::from_ext(&ext).first()?;
    let text = mime.type_() == mime_guess::mime::TEXT
        || matches!(mime.subtype().as_str(), "javascript" | "json" | "xml");
    Some(if text && mime.get_param("charset").is_none() {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    })
}

/// The content type of bytes that start with `data`.
pub fn sniff(data: &[u8]) -> &'static str {
    let data = &data[..data.len().min(SNIFF_LEN)];
    let trimmed = {
        let skip = data
            .iter()
            .position(|b| !matches!(b, b'\t' | b'\n' | 0x0c | b'\r' | b' '))
            .unwrap_or(data.len());
        &data[skip..]
    };
    if is_html(trimmed) {
        return "text/html; charset=utf-8";
    }
    if trimmed.starts_with(b"<?xml") {
        return "text/xml; charset=utf-8";
    }
    if data.starts_with(b"#EXTM3U") {
        return "application/vnd.apple.mpegurl";
    }
    const MAGIC: &[(&[u8], &str)] = &[
        (b"%PDF-", "application/pdf"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xff\xd8\xff", "image/jpeg"),
        (b"\x1a\x45\xdf\xa3", "video/webm"),
        (b"ID3", "audio/mpeg"),
        (b"OggS\x00", "application/ogg"),
        (b"fLaC", "audio/flac"),
        (b"\x1f\x8b\x08", "application/x-gzip"),
        (b"PK\x03\x04", "application/zip"),
        (b"\x00asm", "application/wasm"),
    ];
    for (magic, mime) in MAGIC {
        if data.starts_with(magic) {
            return mime;
        }
    }
    if data.len() >= 14 && &data[..4] == b"RIFF" && &data[8..14] == b"WEBPVP" {
        return "image/webp";
    }
    if is_mp4(data) {
        return "video/mp4";
    }
    if is_mpeg_ts(data) {
        return "video/mp2t";
    }
    if data.starts_with(b"\xef\xbb\xbf") || !data.iter().any(|&b| is_binary(b)) {
        return "text/plain; charset=utf-8";
    }
    "application/octet-stream"
}

/// Bytes that never occur in text (WHATWG "binary data byte").
fn is_binary(b: u8) -> bool {
    matches!(b, 0x00..=0x08 | 0x0b | 0x0e..=0x1a | 0x1c..=0x1f)
}

fn is_html(data: &[u8]) -> bool {
    const TAGS: &[&[u8]] = &[
        b"<!DOCTYPE HTML",
        b"<HTML",
        b"<HEAD",
        b"<SCRIPT",
        b"<IFRAME",
        b"<H1",
        b"<DIV",
        b"<FONT",
        b"<TABLE",
        b"<A",
        b"<STYLE",
        b"<TITLE",
        b"<B",
        b"<BODY",
        b"<BR",
        b"<P",
        b"<!--",
    ];
    TAGS.iter().any(|tag| {
        data.len() > tag.len()
            && data[..tag.len()].eq_ignore_ascii_case(tag)
            // The tag must end here: "<a" but not "<abbr-ish".
            && matches!(data[tag.len()], b' ' | b'>')
    })
}

/// An ISO base media file whose `ftyp` box names an `mp4` brand.
fn is_mp4(data: &[u8]) -> bool {
    if data.len() < 12 || &data[4..8] != b"ftyp" {
        return false;
    }
    let size = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
    if size < 12 || size % 4 != 0 || data.len() < size {
        return false;
    }
    // Major brand at 8, minor version at 12, compatible brands after.
    (8..size)
        .step_by(4)
        .filter(|&at| at != 12)
        .any(|at| &data[at..at + 3] == b"mp4" || &data[at..at + 4] == b"isom")
}

/// MPEG transport stream: sync bytes every 188 bytes.
fn is_mpeg_ts(data: &[u8]) -> bool {
    data.len() >= 188 * 2 && data.iter().step_by(188).take(3).all(|&b| b == 0x47)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_extension() {
        assert_eq!(by_name("a.m3u8").unwrap(), "application/vnd.apple.mpegurl");
        assert_eq!(by_name("seg-0001.ts").unwrap(), "video/mp2t");
        assert_eq!(by_name("x.PNG").unwrap(), "image/png");
        assert_eq!(by_name("index.html").unwrap(), "text/html; charset=utf-8");
        assert_eq!(by_name("v.mp4").unwrap(), "video/mp4");
        assert_eq!(by_name("noext"), None);
        assert_eq!(by_name("x.unknown-ext"), None);
    }

    #[test]
    fn by_content() {
        assert_eq!(sniff(b"  <!doctype html><p>"), "text/html; charset=utf-8");
        assert_eq!(sniff(b"<html>"), "text/html; charset=utf-8");
        assert_eq!(sniff(b"<abbr>"), "text/plain; charset=utf-8");
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), "image/png");
        assert_eq!(sniff(b"\xff\xd8\xff\xe0"), "image/jpeg");
        assert_eq!(sniff(b"GIF89a..."), "image/gif");
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), "image/webp");
        assert_eq!(sniff(b"%PDF-1.7"), "application/pdf");
        assert_eq!(
            sniff(b"#EXTM3U\n#EXT-X-VERSION:3\n"),
            "application/vnd.apple.mpegurl"
        );
        let mut mp4 = vec![0, 0, 0, 0x18];
        mp4.extend_from_slice(b"ftypisom\0\0\x02\0isomiso2");
        assert_eq!(sniff(&mp4), "video/mp4");
        let mut ts = vec![0u8; 188 * 3];
        for p in ts.chunks_mut(188) {
            p[0] = 0x47;
        }
        assert_eq!(sniff(&ts), "video/mp2t");
        assert_eq!(sniff(b"hello, world\n"), "text/plain; charset=utf-8");
        assert_eq!(sniff(b""), "text/plain; charset=utf-8");
        assert_eq!(sniff(b"\x00\x01\x02binary"), "application/octet-stream");
    }
}

//! Generated HTML: directory listings.
//!
//! Every name that comes from content is escaped for HTML and, in links,
//! percent-encoded as a path segment, so a file named `<script>` or `a/b?c`
//! shows as text and links to itself.

use crate::unixfs::export::DirEntry;
use cid::Cid;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use std::fmt::Write;

/// Characters escaped in a path segment of a link.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'\'')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}')
    .add(b'[')
    .add(b']');

/// Bumped whenever the listing's HTML changes, so caches holding an old
/// rendering (keyed by the listing's Etag) are bypassed.
pub const LISTING_VERSION: &str = "1";

/// `s` with HTML's special characters escaped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` percent-encoded as one URL path segment.
pub fn encode_segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}\
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.3rem .6rem;border-bottom:1px solid #ddd}\
code,.cid{font-family:ui-monospace,monospace;font-size:.85em}.size{text-align:right;white-space:nowrap}";

/// A human-readable byte count.
fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The listing of the directory `cid` at `path` (the request path, ending
/// in `/`); `has_parent` adds a `..` row.
pub fn listing(path: &str, cid: &Cid, entries: &[DirEntry], has_parent: bool) -> String {
    let title = escape(&percent_encoding::percent_decode_str(path).decode_utf8_lossy());
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
<style>{STYLE}</style></head><body>\n<h1>Index of {title}</h1>\n<p class=\"cid\">{cid}</p>\n\
<p><a href=\"?format=car\">Download as CAR</a></p>\n\
<table>\n<tr><th>Name</th><th class=\"size\">Size (DAG)</th><th>CID</th></tr>\n"
    );
    if has_parent {
        out.push_str("<tr><td><a href=\"../\">..</a></td><td></td><td></td></tr>\n");
    }
    for e in entries {
        // "./" keeps a name like "a:b" from reading as a URL scheme.
        let _ = writeln!(
            out,
            "<tr><td><a href=\"./{href}\">{name}</a></td><td class=\"size\">{size}</td>\
<td class=\"cid\"><a href=\"/ipfs/{cid}\">{cid}</a></td></tr>",
            href = escape(&encode_segment(&e.name)),
            name = escape(&e.name),
            size = human(e.size),
            cid = e.cid,
        );
    }
    out.push_str("</table>\n</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_and_encoded() {
        assert_eq!(
            escape("<a href='x'>&\""),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;"
        );
        assert_eq!(encode_segment("a b/c?d#e%f"), "a%20b%2Fc%3Fd%23e%25f");
        assert_eq!(
            encode_segment("видео.ts"),
            "%D0%B2%D0%B8%D0%B4%D0%B5%D0%BE.ts"
        );
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human(12), "12 B");
        assert_eq!(human(2048), "2.0 KiB");
        assert_eq!(human(5 << 30), "5.0 GiB");
    }
}

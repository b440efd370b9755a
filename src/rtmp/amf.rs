//! AMF0 values: the encoding of RTMP command and data messages.
//!
//! Flow: [`decode_all`] turns the payload of a command (type 20) or data
//! (type 18) message into a list of [`Amf0Value`]s; [`Amf0Value::encode`]
//! writes our answers. AMF3 is not supported: every encoder we care about
//! connects with `objectEncoding` 0.
//!
//! Decoding is defensive: nesting is limited to [`MAX_DEPTH`], counts taken
//! from the wire never size an allocation beyond what the input can hold, and
//! every malformed input is an [`AmfError`], never a panic.

use bytes::BufMut;
use thiserror::Error;

/// How deep objects and arrays may nest before decoding is refused. Real
/// metadata nests two or three levels; the limit protects the stack.
pub const MAX_DEPTH: usize = 32;

const NUMBER: u8 = 0x00;
const BOOLEAN: u8 = 0x01;
const STRING: u8 = 0x02;
const OBJECT: u8 = 0x03;
const NULL: u8 = 0x05;
const UNDEFINED: u8 = 0x06;
const ECMA_ARRAY: u8 = 0x08;
const OBJECT_END: u8 = 0x09;
const STRICT_ARRAY: u8 = 0x0a;
const DATE: u8 = 0x0b;
const LONG_STRING: u8 = 0x0c;

/// Why an AMF0 buffer could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AmfError {
    /// The buffer ended inside a value.
    #[error("AMF0 truncated at byte {offset} while reading {what}")]
    Truncated {
        /// Offset into the buffer where more bytes were needed.
        offset: usize,
        /// What was being read.
        what: &'static str,
    },
    /// A type marker AMF0 does not define or we do not support (AMF3 switch,
    /// references, typed objects, XML).
    #[error("unsupported AMF0 type marker {marker:#04x} at byte {offset}")]
    UnsupportedMarker {
        /// The marker byte.
        marker: u8,
        /// Its offset.
        offset: usize,
    },
    /// An object-end marker appeared where a value was expected.
    #[error("unexpected AMF0 object end at byte {offset}")]
    UnexpectedObjectEnd {
        /// Its offset.
        offset: usize,
    },
    /// Objects or arrays nested deeper than [`MAX_DEPTH`].
    #[error("AMF0 values nested deeper than {MAX_DEPTH}")]
    TooDeep,
}

/// One AMF0 value.
///
/// Strings and long strings decode to the same variant; the encoder picks
/// the long form when a string does not fit a 16-bit length.
#[derive(Debug, Clone, PartialEq)]
pub enum Amf0Value {
    /// An IEEE 754 double.
    Number(f64),
    /// A boolean.
    Boolean(bool),
    /// A string (AMF0 string or long string).
    String(String),
    /// An anonymous object: properties in wire order.
    Object(Vec<(String, Amf0Value)>),
    /// `null`.
    Null,
    /// `undefined`.
    Undefined,
    /// An associative ("ECMA") array: properties in wire order. The count
    /// on the wire is only a hint, so it is not kept.
    EcmaArray(Vec<(String, Amf0Value)>),
    /// A dense array.
    StrictArray(Vec<Amf0Value>),
    /// A date: milliseconds since the Unix epoch and a time zone offset in
    /// minutes (which the spec says to ignore, but we keep for round trips).
    Date {
        /// Milliseconds since 1970-01-01T00:00:00Z.
        millis: f64,
        /// Time zone offset in minutes.
        timezone: i16,
    },
}

impl Amf0Value {
    /// Shorthand for a string value.
    pub fn string(s: impl Into<String>) -> Self {
        Self::String(s.into())
    }

    /// Shorthand for an object from `(key, value)` pairs.
    pub fn object<K: Into<String>>(props: impl IntoIterator<Item = (K, Amf0Value)>) -> Self {
        Self::Object(props.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// The string inside, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number inside, if this is a number.
    pub fn as_number(&self) -> Option<f64> {
        match self {
            Self::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The properties, if this is an object or an ECMA array.
    pub fn properties(&self) -> Option<&[(String, Amf0Value)]> {
        match self {
            Self::Object(p) | Self::EcmaArray(p) => Some(p),
            _ => None,
        }
    }

    /// The first property named `key`, if this is an object or ECMA array.
    pub fn get(&self, key: &str) -> Option<&Amf0Value> {
        self.properties()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// Appends the AMF0 encoding of this value to `out`.
    pub fn encode(&self, out: &mut impl BufMut) {
        match self {
            Self::Number(n) => {
                out.put_u8(NUMBER);
                out.put_f64(*n);
            }
            Self::Boolean(b) => {
                out.put_u8(BOOLEAN);
                out.put_u8(u8::from(*b));
            }
            Self::String(s) => match u16::try_from(s.len()) {
                Ok(len) => {
                    out.put_u8(STRING);
                    out.put_u16(len);
                    out.put_slice(s.as_bytes());
                }
                Err(_) => {
                    out.put_u8(LONG_STRING);
                    // A string longer than 4 GiB cannot be in memory on the
                    // targets we build for alongside everything else; cap
                    // rather than wrap so the output stays decodable.
                    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
                    out.put_u32(len);
                    out.put_slice(&s.as_bytes()[..len as usize]);
                }
            },
            Self::Object(props) => {
                out.put_u8(OBJECT);
                encode_properties(props, out);
            }
            Self::Null => out.put_u8(NULL),
            Self::Undefined => out.put_u8(UNDEFINED),
            Self::EcmaArray(props) => {
                out.put_u8(ECMA_ARRAY);
                out.put_u32(u32::try_from(props.len()).unwrap_or(u32::MAX));
                encode_properties(props, out);
            }
            Self::StrictArray(items) => {
                out.put_u8(STRICT_ARRAY);
                out.put_u32(u32::try_from(items.len()).unwrap_or(u32::MAX));
                for item in items {
                    item.encode(out);
                }
            }
            Self::Date { millis, timezone } => {
                out.put_u8(DATE);
                out.put_f64(*millis);
                out.put_i16(*timezone);
            }
        }
    }
}

fn encode_properties(props: &[(String, Amf0Value)], out: &mut impl BufMut) {
    for (key, value) in props {
        // Property names use the short string form without a marker; a name
        // over 64 KiB is truncated rather than producing a corrupt stream.
        let key = &key.as_bytes()[..key.len().min(usize::from(u16::MAX))];
        out.put_u16(key.len() as u16);
        out.put_slice(key);
        value.encode(out);
    }
    out.put_u16(0);
    out.put_u8(OBJECT_END);
}

/// Encodes `values` one after another, as a command message carries them.
pub fn encode_all(values: &[Amf0Value], out: &mut impl BufMut) {
    for v in values {
        v.encode(out);
    }
}

/// Decodes every value in `buf`.
pub fn decode_all(buf: &[u8]) -> Result<Vec<Amf0Value>, AmfError> {
    let mut reader = Reader { buf, pos: 0 };
    let mut values = Vec::new();
    while reader.pos < buf.len() {
        values.push(reader.value(0)?);
    }
    Ok(values)
}

/// Decodes one value from the front of `buf`, returning it and the number
/// of bytes it took.
pub fn decode_one(buf: &[u8]) -> Result<(Amf0Value, usize), AmfError> {
    let mut reader = Reader { buf, pos: 0 };
    let value = reader.value(0)?;
    Ok((value, reader.pos))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], AmfError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or(AmfError::Truncated {
                offset: self.pos,
                what,
            })?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, AmfError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, AmfError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, AmfError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f64(&mut self, what: &'static str) -> Result<f64, AmfError> {
        let b = self.take(8, what)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(f64::from_be_bytes(a))
    }

    /// Reads `len` bytes of text. Invalid UTF-8 is replaced rather than
    /// refused: strings from encoders are informational (titles, versions),
    /// and refusing a stream over a mis-encoded title helps nobody.
    fn text(&mut self, len: usize, what: &'static str) -> Result<String, AmfError> {
        let bytes = self.take(len, what)?;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }

    fn value(&mut self, depth: usize) -> Result<Amf0Value, AmfError> {
        let offset = self.pos;
        let marker = self.u8("type marker")?;
        Ok(match marker {
            NUMBER => Amf0Value::Number(self.f64("number")?),
            BOOLEAN => Amf0Value::Boolean(self.u8("boolean")? != 0),
            STRING => {
                let len = self.u16("string length")?;
                Amf0Value::String(self.text(usize::from(len), "string")?)
            }
            LONG_STRING => {
                let len = self.u32("long string length")?;
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                Amf0Value::String(self.text(len, "long string")?)
            }
            OBJECT => Amf0Value::Object(self.properties(depth + 1)?),
            NULL => Amf0Value::Null,
            UNDEFINED => Amf0Value::Undefined,
            ECMA_ARRAY => {
                // The count is a hint some encoders get wrong (ffmpeg writes
                // 0 for metadata it fills later), so read to the end marker.
                let _count = self.u32("ECMA array count")?;
                Amf0Value::EcmaArray(self.properties(depth + 1)?)
            }
            STRICT_ARRAY => {
                if depth + 1 > MAX_DEPTH {
                    return Err(AmfError::TooDeep);
                }
                let count = self.u32("strict array count")?;
                let count = usize::try_from(count).unwrap_or(usize::MAX);
                // Each item is at least one byte, so the remaining input
                // bounds the allocation whatever the count claims.
                let mut items = Vec::with_capacity(count.min(self.buf.len() - self.pos));
                for _ in 0..count {
                    items.push(self.value(depth + 1)?);
                }
                Amf0Value::StrictArray(items)
            }
            DATE => {
                let millis = self.f64("date")?;
                let timezone = self.u16("date time zone")? as i16;
                Amf0Value::Date { millis, timezone }
            }
            OBJECT_END => return Err(AmfError::UnexpectedObjectEnd { offset }),
            marker => return Err(AmfError::UnsupportedMarker { marker, offset }),
        })
    }

    fn properties(&mut self, depth: usize) -> Result<Vec<(String, Amf0Value)>, AmfError> {
        if depth > MAX_DEPTH {
            return Err(AmfError::TooDeep);
        }
        let mut props = Vec::new();
        loop {
            let len = self.u16("property name length")?;
            if len == 0 {
                let at = self.pos;
                match self.u8("object end")? {
                    OBJECT_END => return Ok(props),
                    // An empty key followed by a value: legal, if odd.
                    _ => self.pos = at,
                }
            }
            let key = self.text(usize::from(len), "property name")?;
            let value = self.value(depth)?;
            props.push((key, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(values: &[Amf0Value]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_all(values, &mut out);
        out
    }

    /// ffmpeg's `connect` command as `gen_connect` writes it for
    /// `rtmp://127.0.0.1/live/key`, spelled out byte by byte.
    #[test]
    fn ffmpeg_connect_bytes() {
        let mut bytes = vec![0x02, 0x00, 0x07];
        bytes.extend_from_slice(b"connect");
        bytes.push(0x00);
        bytes.extend_from_slice(&1.0f64.to_be_bytes());
        bytes.push(0x03);
        for (k, v) in [
            ("app", "live"),
            ("type", "nonprivate"),
            ("flashVer", "FMLE/3.0 (compatible; Lavf61.7.100)"),
            ("tcUrl", "rtmp://127.0.0.1:1935/live"),
        ] {
            bytes.extend_from_slice(&(k.len() as u16).to_be_bytes());
            bytes.extend_from_slice(k.as_bytes());
            bytes.push(0x02);
            bytes.extend_from_slice(&(v.len() as u16).to_be_bytes());
            bytes.extend_from_slice(v.as_bytes());
        }
        bytes.extend_from_slice(&[0x00, 0x00, 0x09]);

        let values = decode_all(&bytes).unwrap();
        assert_eq!(values.len(), 3);
        assert_eq!(values[0].as_str(), Some("connect"));
        assert_eq!(values[1].as_number(), Some(1.0));
        assert_eq!(
            values[2].get("app").and_then(Amf0Value::as_str),
            Some("live")
        );
        assert_eq!(
            values[2].get("tcUrl").and_then(Amf0Value::as_str),
            Some("rtmp://127.0.0.1:1935/live")
        );
        // Our encoder writes the same bytes back.
        assert_eq!(encode(&values), bytes);
    }

    #[test]
    fn scalars_literal() {
        assert_eq!(
            decode_all(&[0x01, 0x01, 0x05, 0x06]).unwrap(),
            vec![
                Amf0Value::Boolean(true),
                Amf0Value::Null,
                Amf0Value::Undefined
            ]
        );
        let mut date = vec![0x0b];
        date.extend_from_slice(&1.5e12f64.to_be_bytes());
        date.extend_from_slice(&(-60i16).to_be_bytes());
        assert_eq!(
            decode_all(&date).unwrap(),
            vec![Amf0Value::Date {
                millis: 1.5e12,
                timezone: -60
            }]
        );
        // Long string with a short payload still decodes.
        assert_eq!(
            decode_all(&[0x0c, 0, 0, 0, 2, b'h', b'i']).unwrap(),
            vec![Amf0Value::string("hi")]
        );
    }

    #[test]
    fn ecma_array_ignores_count() {
        // Count 0, as ffmpeg writes for onMetaData, with two properties.
        let mut bytes = vec![0x08, 0, 0, 0, 0];
        bytes.extend_from_slice(&[0, 5]);
        bytes.extend_from_slice(b"width");
        bytes.push(0);
        bytes.extend_from_slice(&1280.0f64.to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 9]);
        let v = decode_all(&bytes).unwrap();
        assert_eq!(
            v[0].get("width").and_then(Amf0Value::as_number),
            Some(1280.0)
        );
    }

    #[test]
    fn malformed_is_an_error() {
        assert!(matches!(
            decode_all(&[0x02, 0x00, 0x05, b'a']),
            Err(AmfError::Truncated { .. })
        ));
        assert!(matches!(
            decode_all(&[0x11]),
            Err(AmfError::UnsupportedMarker { marker: 0x11, .. })
        ));
        assert!(matches!(
            decode_all(&[0x09]),
            Err(AmfError::UnexpectedObjectEnd { offset: 0 })
        ));
        // A strict array claiming four billion items in five bytes.
        assert!(matches!(
            decode_all(&[0x0a, 0xff, 0xff, 0xff, 0xff]),
            Err(AmfError::Truncated { .. })
        ));
        // Objects nested past the limit.
        let mut deep = Vec::new();
        for _ in 0..=MAX_DEPTH {
            deep.extend_from_slice(&[0x03, 0x00, 0x01, b'a']);
        }
        deep.push(0x05);
        assert_eq!(decode_all(&deep), Err(AmfError::TooDeep));
        let mut deep_arrays = Vec::new();
        for _ in 0..=MAX_DEPTH {
            deep_arrays.extend_from_slice(&[0x0a, 0, 0, 0, 1]);
        }
        deep_arrays.push(0x05);
        assert_eq!(decode_all(&deep_arrays), Err(AmfError::TooDeep));
    }

    #[test]
    fn long_strings_use_long_form() {
        let s = "x".repeat(70_000);
        let bytes = encode(&[Amf0Value::string(s.clone())]);
        assert_eq!(bytes[0], LONG_STRING);
        assert_eq!(decode_all(&bytes).unwrap(), vec![Amf0Value::String(s)]);
    }

    pub(crate) fn arb_value() -> impl Strategy<Value = Amf0Value> {
        let leaf = prop_oneof![
            // NaN never equals itself; finite numbers are what encoders send.
            any::<f64>()
                .prop_filter("NaN", |n| !n.is_nan())
                .prop_map(Amf0Value::Number),
            any::<bool>().prop_map(Amf0Value::Boolean),
            ".{0,20}".prop_map(Amf0Value::String),
            Just(Amf0Value::Null),
            Just(Amf0Value::Undefined),
            (any::<i64>(), any::<i16>()).prop_map(|(m, timezone)| Amf0Value::Date {
                millis: m as f64,
                timezone
            }),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            let props = prop::collection::vec(("[a-zA-Z]{0,8}", inner.clone()), 0..6);
            prop_oneof![
                props.clone().prop_map(Amf0Value::Object),
                props.prop_map(Amf0Value::EcmaArray),
                prop::collection::vec(inner, 0..6).prop_map(Amf0Value::StrictArray),
            ]
        })
    }

    proptest! {
        #[test]
        fn round_trip(values in prop::collection::vec(arb_value(), 0..6)) {
            let bytes = encode(&values);
            prop_assert_eq!(decode_all(&bytes).unwrap(), values);
        }

        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_all(&bytes);
        }

        #[test]
        fn decode_one_reports_length(value in arb_value(), tail in prop::collection::vec(any::<u8>(), 0..8)) {
            let mut bytes = encode(std::slice::from_ref(&value));
            let len = bytes.len();
            bytes.extend_from_slice(&tail);
            let (decoded, used) = decode_one(&bytes).unwrap();
            prop_assert_eq!(decoded, value);
            prop_assert_eq!(used, len);
        }
    }
}

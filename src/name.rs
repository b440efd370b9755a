//! Stream names: the one validated type for the public name of a stream.
//!
//! A stream name appears in URLs (`/live/{name}.m3u8`), in file names under
//! the data directory (session state, IPNS keys) and in playlists, so it is
//! checked once, where it enters (config file, command line, URL, a
//! followed site's `stream.json`), and carried as a [`StreamName`] after.
//! This is a leaf module: every stage may use it, it uses none.

use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;
use thiserror::Error;

/// The longest stream name (bytes).
pub const MAX_STREAM_NAME_LEN: usize = 128;

/// A text that is not a stream name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0:?} is not a stream name: use 1 to {MAX_STREAM_NAME_LEN} letters, digits, '-' or '_'")]
pub struct StreamNameError(pub String);

/// A stream's public name: 1 to [`MAX_STREAM_NAME_LEN`] ASCII letters,
/// digits, `-` or `_`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamName(String);

impl StreamName {
    /// Whether `text` is a valid stream name. Stream keys follow the same
    /// character rule, so that they too are safe in a URL path.
    pub fn is_valid(text: &str) -> bool {
        (1..=MAX_STREAM_NAME_LEN).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for StreamName {
    type Error = StreamNameError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        if Self::is_valid(&text) {
            Ok(Self(text))
        } else {
            Err(StreamNameError(text))
        }
    }
}

impl TryFrom<&str> for StreamName {
    type Error = StreamNameError;

    fn try_from(text: &str) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl FromStr for StreamName {
    type Err = StreamNameError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::try_from(text.to_owned())
    }
}

impl From<StreamName> for String {
    fn from(name: StreamName) -> Self {
        name.0
    }
}

impl Deref for StreamName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for StreamName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for StreamName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for StreamName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for StreamName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_once_at_the_edge() {
        assert!(StreamName::is_valid("live") && StreamName::is_valid("A_b-9"));
        assert!(StreamName::is_valid(&"x".repeat(MAX_STREAM_NAME_LEN)));
        for bad in [
            "",
            "a b",
            "a/b",
            "..",
            "../x",
            ".hidden",
            "x.record",
            "caf\u{e9}",
            "a\0",
        ] {
            assert!(!StreamName::is_valid(bad), "{bad:?}");
            assert_eq!(bad.parse::<StreamName>(), Err(StreamNameError(bad.into())));
        }
        assert!(!StreamName::is_valid(&"x".repeat(MAX_STREAM_NAME_LEN + 1)));
        let name: StreamName = "talks".parse().unwrap();
        assert_eq!(name, "talks");
        assert_eq!(format!("{name} {name:?}"), "talks \"talks\"");
    }

    #[test]
    fn serde_refuses_a_bad_name() {
        #[derive(Deserialize, Serialize)]
        struct S {
            name: StreamName,
        }
        let s: S = serde_json::from_str(r#"{"name":"cam-1"}"#).unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), r#"{"name":"cam-1"}"#);
        let e = serde_json::from_str::<S>(r#"{"name":"cam 1"}"#)
            .err()
            .unwrap();
        assert!(e.to_string().contains("is not a stream name"), "{e}");
    }
}

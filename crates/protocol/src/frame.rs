//! Encoded frames: what a transport writes to, or reads from, the wire.
//!
//! A [`Frame`] is cheap to clone (its bytes are reference counted), which is what
//! lets one broadcast be encoded once and handed to thousands of socket writers.

use bytes::Bytes;

/// Bytes that are known to be UTF-8: the body of a text frame.
///
/// The only ways to build one check or guarantee UTF-8, so a transport may hand the
/// bytes to a WebSocket library as text without validating them again.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Text(Bytes);

impl Text {
    /// The text as a string slice.
    pub fn as_str(&self) -> &str {
        // The constructors only accept UTF-8, so this cannot fail; fall back to an
        // empty string rather than panic if that invariant were ever broken.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    /// The underlying bytes (valid UTF-8).
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Gives up the bytes (valid UTF-8).
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Checks that `bytes` are UTF-8 and wraps them.
    pub fn from_utf8(bytes: Bytes) -> Result<Text, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Text(bytes))
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text(Bytes::from(s))
    }
}

impl From<&'static str> for Text {
    fn from(s: &'static str) -> Text {
        Text(Bytes::from_static(s.as_bytes()))
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One WebSocket data frame: JSON text, or a V2 binary frame.
///
/// ```
/// use phx_protocol::{Frame, Text};
///
/// let frame = Frame::text(r#"[null,null,"room:1","shout",{}]"#);
/// assert_eq!(frame.as_text(), Some(r#"[null,null,"room:1","shout",{}]"#));
/// // A clone shares the encoded bytes: one broadcast, many writers.
/// let copy = frame.clone();
/// assert_eq!(copy.as_bytes().as_ptr(), frame.as_bytes().as_ptr());
/// // Text is UTF-8 by construction.
/// assert!(Text::from_utf8(bytes::Bytes::from_static(b"\xff")).is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Frame {
    /// A text frame (opcode 0x1) holding JSON.
    Text(Text),
    /// A binary frame (opcode 0x2) holding a V2 binary message.
    Binary(Bytes),
}

impl Frame {
    /// A text frame from a string.
    pub fn text(s: impl Into<String>) -> Frame {
        Frame::Text(Text::from(s.into()))
    }

    /// The text of a text frame, `None` for a binary one.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Frame::Text(t) => Some(t.as_str()),
            Frame::Binary(_) => None,
        }
    }

    /// The frame's bytes, whatever its kind.
    pub fn as_bytes(&self) -> &Bytes {
        match self {
            Frame::Text(t) => t.as_bytes(),
            Frame::Binary(b) => b,
        }
    }

    /// The frame's length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the frame has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

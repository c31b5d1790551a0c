//! The one error type of the protocol crate.
//!
//! Every way a frame can be malformed has its own variant, so a transport can log
//! exactly what the peer did wrong and tests can assert on the kind of failure
//! (see [`ProtocolError::kind`], which the test vectors in `protocol-spec/vectors`
//! name).

/// What was wrong with a frame, or why a message cannot be encoded.
///
/// ```
/// use phx_protocol::{ProtocolError, Serializer};
///
/// let v2 = Serializer::negotiate(Some("2.0.0")).unwrap();
/// let err = v2.decode_text(r#"["1","2","room:1"]"#).unwrap_err();
/// assert_eq!(err, ProtocolError::WrongArity(3));
/// assert_eq!(err.kind(), "wrong_arity");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The text frame is not JSON at all.
    #[error("frame is not valid JSON: {0}")]
    InvalidJson(String),
    /// A V2 text frame that is valid JSON but not an array.
    #[error("V2 JSON serializer expected an array, got {0}")]
    NotAnArray(&'static str),
    /// A V1 text frame that is valid JSON but not an object.
    #[error("V1 JSON serializer expected an object, got {0}")]
    NotAnObject(&'static str),
    /// A V2 array with fewer than five elements.
    #[error("V2 JSON frame has {0} elements, expected [join_ref, ref, topic, event, payload]")]
    WrongArity(usize),
    /// A V1 object without one of `topic`, `event`, `payload`, `ref`.
    #[error("V1 JSON frame is missing key {0:?}")]
    MissingKey(&'static str),
    /// A field holds a JSON value of the wrong type (a numeric topic, say).
    #[error("field {field:?} must be {expected}")]
    WrongFieldType {
        /// The field's name: `join_ref`, `ref`, `topic`, `event`, `status` or `response`.
        field: &'static str,
        /// What the field must hold.
        expected: &'static str,
    },
    /// A binary frame shorter than its header, or whose size fields point past its end.
    #[error("binary frame is {got} bytes, its header needs at least {needed}")]
    BinaryTooShort {
        /// Bytes the header says must be there.
        needed: usize,
        /// Bytes the frame has.
        got: usize,
    },
    /// A binary frame whose first byte is not a known kind (0 push, 1 reply, 2 broadcast).
    #[error("unknown binary frame kind {0}")]
    UnknownBinaryKind(u8),
    /// A binary frame of a kind that only servers send (reply or broadcast) came from a client.
    #[error("binary frame kind {0} is sent by servers only; clients send pushes (kind 0)")]
    ServerOnlyBinaryKind(u8),
    /// A string field of a binary frame is not UTF-8.
    #[error("binary frame field {0:?} is not valid UTF-8")]
    InvalidUtf8(&'static str),
    /// A field is longer than a binary frame's one-byte size field can describe.
    #[error("unable to convert {field} to binary: {len} bytes is over the 255-byte limit")]
    FieldTooLong {
        /// The field's name.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// V2 pushes and broadcasts carry a JSON object or binary data, nothing else.
    #[error("V2 push and broadcast payloads must be JSON objects or binary")]
    PayloadNotObject,
    /// A binary payload cannot be encoded by the V1 serializer (it has no binary layout).
    #[error("binary payloads need the V2 serializer (vsn=2.0.0)")]
    BinaryNeedsV2,
    /// The `vsn` asked for matches no serializer (Phoenix answers such a connect with 403).
    #[error("the client's requested transport version {0:?} does not match server's version")]
    UnsupportedVsn(String),
}

impl ProtocolError {
    /// A stable, short name for the kind of error, as used by the test vectors.
    pub fn kind(&self) -> &'static str {
        match self {
            ProtocolError::InvalidJson(_) => "invalid_json",
            ProtocolError::NotAnArray(_) => "not_an_array",
            ProtocolError::NotAnObject(_) => "not_an_object",
            ProtocolError::WrongArity(_) => "wrong_arity",
            ProtocolError::MissingKey(_) => "missing_key",
            ProtocolError::WrongFieldType { .. } => "wrong_field_type",
            ProtocolError::BinaryTooShort { .. } => "binary_too_short",
            ProtocolError::UnknownBinaryKind(_) => "unknown_binary_kind",
            ProtocolError::ServerOnlyBinaryKind(_) => "server_only_binary_kind",
            ProtocolError::InvalidUtf8(_) => "invalid_utf8",
            ProtocolError::FieldTooLong { .. } => "field_too_long",
            ProtocolError::PayloadNotObject => "payload_not_object",
            ProtocolError::BinaryNeedsV2 => "binary_needs_v2",
            ProtocolError::UnsupportedVsn(_) => "unsupported_vsn",
        }
    }
}

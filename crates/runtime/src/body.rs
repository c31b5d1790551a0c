//! The HTTP body of the endpoint's requests and responses: [`Body`], one boxed
//! body type of our own, so that no HTTP implementation crate shows in the
//! runtime's API (the way `axum::body::Body` stands in front of hyper's).

use std::fmt;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;

/// The error a [`Body`] yields: whatever error the body it wraps had, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The body of every request the endpoint hands on (to a
/// [fallback](crate::EndpointService::fallback) app, or to an app served by
/// [`crate::serve`]) and of every response it gives: any [`http_body::Body`] of
/// [`Bytes`], boxed.
///
/// ```
/// use http_body_util::BodyExt;
/// use phx_runtime::body::Body;
///
/// # async fn run() -> Result<(), phx_runtime::body::BoxError> {
/// let body = Body::from("hello");
/// let bytes = body.collect().await?.to_bytes();
/// assert_eq!(&bytes[..], b"hello");
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(run()).unwrap();
/// ```
pub struct Body(BoxBody<Bytes, BoxError>);

impl Body {
    /// Wraps any body of [`Bytes`] (hyper's, axum's, `http_body_util::Full`).
    pub fn new<B>(body: B) -> Body
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Body(SyncBody::new(body).map_err(Into::into).boxed())
    }

    /// A body with no bytes.
    pub fn empty() -> Body {
        Body::new(http_body_util::Empty::new())
    }
}

impl Default for Body {
    fn default() -> Body {
        Body::empty()
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Body")
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Body {
        Body::new(http_body_util::Full::new(bytes))
    }
}

impl From<String> for Body {
    fn from(text: String) -> Body {
        Body::from(Bytes::from(text))
    }
}

impl From<&'static str> for Body {
    fn from(text: &'static str) -> Body {
        Body::from(Bytes::from_static(text.as_bytes()))
    }
}

impl From<Vec<u8>> for Body {
    fn from(bytes: Vec<u8>) -> Body {
        Body::from(Bytes::from(bytes))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

/// Makes any body `Sync`, as warp asks of request bodies (axum's body is not).
/// The mutex is never contended: polling takes `&mut self` and reaches the
/// body without locking.
struct SyncBody<B>(Mutex<Pin<Box<B>>>);

impl<B> SyncBody<B> {
    fn new(body: B) -> SyncBody<B> {
        SyncBody(Mutex::new(Box::pin(body)))
    }
}

impl<B: http_body::Body> http_body::Body for SyncBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let inner = self
            .get_mut()
            .0
            .get_mut()
            .unwrap_or_else(|e| e.into_inner());
        inner.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        match self.0.lock() {
            Ok(inner) => inner.is_end_stream(),
            Err(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.0.lock() {
            Ok(inner) => inner.size_hint(),
            Err(_) => SizeHint::default(),
        }
    }
}

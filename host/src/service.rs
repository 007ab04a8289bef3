//! [`Transport`] as a `tower_service::Service`, as hyper-util's `Client` is, so tower
//! and tower-http middleware (timeouts, retries, limits, tracing) stack on it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use tower::{ServiceBuilder, ServiceExt};
//! let transport = roundtrip_host::Transport::new(roundtrip_host::Config::default())?;
//! let client = ServiceBuilder::new()
//!     .timeout(std::time::Duration::from_secs(10))
//!     .service(transport);
//! let request = http::Request::get("http://127.0.0.1:8080/").body(String::new())?;
//! let response = client.oneshot(request).await?;
//! # Ok(()) }
//! ```

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body as HttpBody, Frame};

use crate::body::{Body, BoxError, ResponseBody};
use crate::client::Client;
use crate::error::Error;
use crate::transport::Transport;

/// Any request body: our own [`Body`] as it is; one whose bytes are all there at
/// once (`String`, `Full<Bytes>`, empty) as bytes, sent with `Content-Length` and
/// replayable on a retry; anything else streamed (`Body::wrap`).
impl<B> tower_service::Service<http::Request<B>> for Transport
where
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<ResponseBody>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        ready(self)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let transport = self.clone();
        let request = request.map(into_body);
        Box::pin(async move { transport.round_trip(request).await })
    }
}

/// A [`Client`] is a service the same way: redirects, cookies and its timeout inside.
impl<B> tower_service::Service<http::Request<B>> for Client
where
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<ResponseBody>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        ready(self.transport())
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let client = self.clone();
        let request = request.map(into_body);
        Box::pin(async move { client.send(request).await })
    }
}

/// Always ready: requests wait for a connection inside the transport (Go's pool keeps
/// them in line), not here. A transport that has shut down says so.
fn ready(transport: &Transport) -> Poll<Result<(), Error>> {
    if transport.is_shut_down() {
        return Poll::Ready(Err(Error::shutdown()));
    }
    Poll::Ready(Ok(()))
}

fn into_body<B>(body: B) -> Body
where
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut body = Some(body);
    if let Some(ours) = (&mut body as &mut dyn Any).downcast_mut::<Option<Body>>() {
        return ours.take().unwrap_or_default();
    }
    let Some(body) = body else {
        return Body::empty();
    };
    if body.is_end_stream() {
        return Body::empty();
    }
    // A body whose length is known may have it all at hand: one poll tells.
    if body.size_hint().exact().is_none() {
        return Body::wrap(body);
    }
    let mut body = Box::pin(body);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let first = match body.as_mut().poll_frame(&mut cx) {
        Poll::Ready(Some(Ok(frame))) => frame,
        Poll::Ready(None) => return Body::empty(),
        Poll::Ready(Some(Err(e))) => {
            return Body::from_try_stream(futures::stream::iter([Err::<Bytes, _>(e.into())]));
        }
        Poll::Pending => return Body::wrap(body),
    };
    let first = first.map_data(|mut data| data.copy_to_bytes(data.remaining()));
    let first = match first.into_data() {
        Ok(bytes) if body.is_end_stream() => return Body::from(bytes),
        Ok(bytes) => Frame::data(bytes),
        Err(trailers) => trailers,
    };
    Body::wrap_after(Some(first), body)
}

//! How a plane answers: a [`Handler`] returns a [`Reply`] that is either
//! ready (the hot paths: resolve, forward-auth, introspection, health) or a
//! future (routes that read a body or wait: batch, `Check`, refresh).
//!
//! A ready reply is computed inside hyper's `Service::call` and handed back
//! as a ready future: no per-request task state, no boxing, no reference
//! count bumped for the handler.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request, Response};
use hyper::body::Incoming;

use super::hot::HotRoutes;
use super::Body;

/// One plane's routes.
pub trait Handler: Send + Sync + 'static {
    fn handle(self: &Arc<Self>, req: Request<Incoming>) -> Reply;

    /// The routes the HTTP/1.1 hot path answers without hyper (see
    /// `super::hot`); none by default.
    fn hot_routes(&self) -> Option<&dyn HotRoutes> {
        None
    }
}

/// A plane's routes, as `(method, OpenAPI path)`; `*` is any method.
pub type Routes = &'static [(&'static str, &'static str)];

/// The method a plane routes on: `HEAD` is `GET` without the body (hyper
/// leaves the body out and keeps the headers), so every `GET` route
/// answers `HEAD` as well.
pub fn routed(method: &Method) -> &Method {
    if method == Method::HEAD {
        &Method::GET
    } else {
        method
    }
}

/// What a 405 on `route` names in its `Allow` header.
pub fn allowed(routes: Routes, route: &str) -> &'static str {
    match routes.iter().find(|(_, path)| *path == route) {
        Some(("POST", _)) => "POST",
        _ => "GET, HEAD",
    }
}

/// A handler's answer: now, or once the future completes.
// The ready response is kept inline: boxing it would allocate on every
// resolve, which is what this type exists to avoid.
#[allow(clippy::large_enum_variant)]
pub enum Reply {
    Ready(Response<Body>),
    Pending(Pin<Box<dyn Future<Output = Response<Body>> + Send>>),
}

impl Reply {
    /// An answer that needs to wait (a body to read, a fetch to finish).
    pub fn later(future: impl Future<Output = Response<Body>> + Send + 'static) -> Reply {
        Reply::Pending(Box::pin(future))
    }
}

impl From<Response<Body>> for Reply {
    fn from(response: Response<Body>) -> Reply {
        Reply::Ready(response)
    }
}

/// hyper's view of a plane, one per connection.
pub struct PlaneService<H>(pub Arc<H>);

impl<H> Clone for PlaneService<H> {
    fn clone(&self) -> Self {
        PlaneService(self.0.clone())
    }
}

impl<H: Handler> hyper::service::Service<Request<Incoming>> for PlaneService<H> {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ReplyFuture;

    #[inline]
    fn call(&self, req: Request<Incoming>) -> ReplyFuture {
        match self.0.handle(req) {
            Reply::Ready(response) => ReplyFuture::Ready(Some(response)),
            Reply::Pending(future) => ReplyFuture::Pending(future),
        }
    }
}

#[allow(clippy::large_enum_variant)] // as for `Reply`
pub enum ReplyFuture {
    Ready(Option<Response<Body>>),
    Pending(Pin<Box<dyn Future<Output = Response<Body>> + Send>>),
}

impl Future for ReplyFuture {
    type Output = Result<Response<Body>, Infallible>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            ReplyFuture::Ready(response) => match response.take() {
                Some(r) => Poll::Ready(Ok(r)),
                // Polled again after completion: a bug in the caller.
                None => Poll::Pending,
            },
            ReplyFuture::Pending(future) => future.as_mut().poll(cx).map(Ok),
        }
    }
}

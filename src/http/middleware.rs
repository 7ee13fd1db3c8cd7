//! The outermost middleware: a request id, a tracing span for the whole request, one log line
//! when it ends; and the server-wide count of requests under way that a graceful shutdown waits
//! on ([`Drain`]).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BodySize, BoxBody, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::{ConnectionType, StatusCode};
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{web, HttpMessage, ResponseError};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGauge, Opts};
use tokio::sync::Notify;
use tracing::Instrument;

use super::extract::RequestId;
use super::problem::Problem;
use crate::state::AppState;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The requests under way on every HTTP worker of the server, and whether it is shutting down.
///
/// A graceful shutdown must not let any worker's runtime stop while a request is under way on
/// another: tenant actors live on the workers' threads and serve requests accepted by any
/// worker, and a pooled connection is driven by the runtime that opened it, whoever uses it.
/// actix stops each worker as soon as its own connections are done, so the server waits on
/// this count, for every worker at once, before it stops them (`crate::startup`).
///
/// A request counts from the moment it enters [`request_context`] until its response is
/// produced, or, for a streamed response, until its body ends. A WebSocket session does not
/// count once upgraded: what it does afterwards stays on its own worker, and it would hold the
/// drain until the timeout.
#[derive(Default)]
pub struct Drain {
    in_flight: AtomicUsize,
    closing: AtomicBool,
    idle: Notify,
}

impl Drain {
    /// Counts a request in, or None once the server is shutting down.
    fn admit(self: &Arc<Self>) -> Option<InFlight> {
        // Counted before `closing` is read, and `close` sets `closing` before it reads the
        // count (both sequentially consistent): either this request sees the server closing, or
        // `close` sees this request.
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let entry = InFlight(self.clone());
        (!self.closing.load(Ordering::SeqCst)).then_some(entry)
    }

    fn leave(&self) {
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 && self.closing.load(Ordering::SeqCst)
        {
            self.idle.notify_waiters();
        }
    }

    /// Requests under way now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// From now on every request is refused (503 `shutting_down`, see [`request_context`]);
    /// waits until those admitted before have been answered, `within` at most. Returns how
    /// many are still under way then.
    pub async fn close(&self, within: Duration) -> usize {
        self.closing.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            // Registered before the count is read, so the last request's notification between
            // the read and the wait is not missed.
            idle.as_mut().enable();
            let left = self.in_flight();
            if left == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.in_flight();
            }
        }
    }

    /// Exports the count as `http_requests_in_flight`.
    pub fn register_metrics(
        self: &Arc<Self>,
        into: &prometheus::Registry,
    ) -> prometheus::Result<()> {
        let gauge = IntGauge::with_opts(Opts::new(
            "http_requests_in_flight",
            "Requests under way on every HTTP worker (a streamed response until its body ends)",
        ))?;
        into.register(Box::new(InFlightCollector {
            drain: self.clone(),
            gauge,
        }))
    }
}

/// One request under way; dropping it counts the request out.
struct InFlight(Arc<Drain>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.leave();
    }
}

struct InFlightCollector {
    drain: Arc<Drain>,
    gauge: IntGauge,
}

impl Collector for InFlightCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.gauge
            .set(i64::try_from(self.drain.in_flight()).unwrap_or(i64::MAX));
        self.gauge.collect()
    }
}

/// A streamed body that keeps its request counted until it ends (or is dropped: the client went
/// away).
struct CountedBody {
    body: BoxBody,
    entry: Option<InFlight>,
}

impl MessageBody for CountedBody {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        let next = Pin::new(&mut this.body).poll_next(cx);
        if matches!(next, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.entry = None;
        }
        next
    }
}

/// The answer to a request that arrives, on a connection kept alive, once shutdown has begun:
/// the connection closes after it, so the client (or its load balancer) retries elsewhere.
fn shutting_down() -> actix_web::HttpResponse {
    let mut response = Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        "the server is shutting down; retry on a new connection",
    )
    .retry_after(1)
    .error_response();
    response
        .head_mut()
        .set_connection_type(ConnectionType::Close);
    response
}

fn incoming_request_id(req: &ServiceRequest) -> Option<String> {
    let value = req.headers().get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let sane = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    sane.then(|| value.to_string())
}

pub async fn request_context<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B, BoxBody>>, actix_web::Error> {
    let request_id = incoming_request_id(&req).unwrap_or_else(|| {
        // Encoded directly: `to_string` would go through the formatting machinery.
        let mut buffer = uuid::Uuid::encode_buffer();
        (*uuid::Uuid::now_v7().hyphenated().encode_lower(&mut buffer)).to_owned()
    });
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %req.method(),
        path = %req.path(),
        tenant_id = tracing::field::Empty,
    );
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let method = req.method().clone();
    let started = Instant::now();
    let entry = match req.app_data::<web::Data<Drain>>() {
        Some(drain) => match drain.clone().into_inner().admit() {
            Some(entry) => Some(entry),
            None => {
                let response = req.into_response(shutting_down()).map_into_right_body();
                return Ok(span.in_scope(|| {
                    finished(
                        response,
                        &request_id,
                        state.as_ref(),
                        method.as_str(),
                        started,
                    )
                }));
            }
        },
        None => None,
    };
    let result = next.call(req).instrument(span.clone()).await;
    let _entered = span.enter();
    match result {
        Ok(response) => {
            let streamed = matches!(response.response().body().size(), BodySize::Stream)
                && response.status() != StatusCode::SWITCHING_PROTOCOLS;
            let response = match entry {
                Some(entry) if streamed => response.map_body(|_, body| {
                    EitherBody::right(BoxBody::new(CountedBody {
                        body: body.boxed(),
                        entry: Some(entry),
                    }))
                }),
                // Complete: the request is over once its answer is produced.
                _ => response.map_into_left_body(),
            };
            Ok(finished(
                response,
                &request_id,
                state.as_ref(),
                method.as_str(),
                started,
            ))
        }
        Err(err) => {
            tracing::warn!(error = %err, "request failed");
            Err(err)
        }
    }
}

/// The request id header, the duration histogram and the log line of every answer.
fn finished<B>(
    mut response: ServiceResponse<B>,
    request_id: &str,
    state: Option<&web::Data<AppState>>,
    method: &str,
    started: Instant,
) -> ServiceResponse<B> {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    super::ratelimit::write_headers(&mut response);
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    if let Some(state) = state {
        state
            .metrics
            .http_duration
            .with_label_values(&[method, route.as_str(), response.status().as_str()])
            .observe(started.elapsed().as_secs_f64());
    }
    tracing::info!(
        status = response.status().as_u16(),
        route = %route,
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request finished"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn close_waits_for_the_requests_admitted_and_refuses_the_others() {
        let drain = Arc::new(Drain::default());
        assert_eq!(drain.close(Duration::ZERO).await, 0, "nothing under way");

        let drain = Arc::new(Drain::default());
        let first = drain.admit().expect("admitted before closing");
        let second = drain.admit().expect("admitted before closing");
        let closing = tokio::spawn({
            let drain = drain.clone();
            async move { drain.close(Duration::from_secs(10)).await }
        });
        tokio::task::yield_now().await;
        assert!(drain.admit().is_none(), "refused once closing");
        assert_eq!(drain.in_flight(), 2, "a refused request is not counted");
        drop(first);
        tokio::task::yield_now().await;
        assert!(!closing.is_finished(), "one request is still under way");
        drop(second);
        assert_eq!(closing.await.expect("join"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn close_gives_up_after_its_time_and_says_how_many_are_left() {
        let drain = Arc::new(Drain::default());
        let _stuck = drain.admit().expect("admitted");
        assert_eq!(drain.close(Duration::from_secs(10)).await, 1);
    }

    #[tokio::test]
    async fn a_streamed_body_counts_until_it_ends() {
        let drain = Arc::new(Drain::default());
        let (lines, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let stream = futures_util::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
                .map(|line| line.map(Ok::<_, std::io::Error>))
        });
        let body = CountedBody {
            body: BoxBody::new(actix_web::body::BodyStream::new(stream)),
            entry: drain.admit(),
        };
        lines
            .send(Bytes::from_static(b"one\n"))
            .await
            .expect("send");
        assert_eq!(drain.in_flight(), 1, "the body has not ended");
        drop(lines);
        let all = actix_web::body::to_bytes(body)
            .await
            .expect("the whole body");
        assert_eq!(&all[..], b"one\n");
        assert_eq!(drain.in_flight(), 0);
    }
}

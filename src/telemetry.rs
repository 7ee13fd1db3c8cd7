//! Structured logs: JSON by default, every request and job span carries its tenant_id.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// The filter when RUST_LOG is not set.
pub const DEFAULT_FILTER: &str = "info,tokio_postgres=warn,refinery_core=warn";

/// Where actix-http logs a connection that ended in an error.
const DISPATCHER: &str = "actix_http::h1::dispatcher";

pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let client_errors = ClientErrors::default();
    // try_init: tests and the CLI may both call this in one process.
    if subscriber(format, filter, std::io::stderr, client_errors.clone())
        .try_init()
        .is_ok()
    {
        client_errors.show(tracing::enabled!(target: DISPATCHER, Level::DEBUG));
    }
}

/// The subscriber `init` installs, writing to `writer`.
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    client_errors: ClientErrors,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = fmt().with_env_filter(filter).with_writer(writer);
    match format {
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .finish()
                .with(client_errors),
        ),
        LogFormat::Pretty => Box::new(builder.finish().with(client_errors)),
    }
}

/// actix-http logs, at ERROR, every connection that ends in an error ("stream error: ..."),
/// including those only a client causes: a request line or header it cannot parse, a
/// connection reset, a request too slow to arrive, a body the handler did not need, a broken
/// WebSocket frame. Those are the client's fault, and at ERROR anyone can fill the error log
/// (and page whoever watches it) with one `nc`. They are kept out of the logs unless
/// RUST_LOG enables DEBUG for `actix_http::h1::dispatcher` (e.g. `RUST_LOG=info,actix_http=debug`);
/// the connection errors of the server's own making (a response body that failed, an internal
/// error) still show at ERROR.
#[derive(Clone, Default)]
pub struct ClientErrors {
    shown: Arc<AtomicBool>,
}

impl ClientErrors {
    /// Whether client-caused connection errors are shown (the filter enables DEBUG for them).
    pub fn show(&self, shown: bool) {
        self.shown.store(shown, Ordering::Relaxed);
    }
}

impl<S: Subscriber> Layer<S> for ClientErrors {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let target = event.metadata().target();
        if !target.starts_with("actix_http::") || self.shown.load(Ordering::Relaxed) {
            return true;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        !client_caused(target, &message.0)
    }
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

/// Whether actix-http's log line `message` (under `target`) reports what a client did rather
/// than a fault of the server. The prefixes are actix-http's `DispatchError` messages.
fn client_caused(target: &str, message: &str) -> bool {
    match target {
        DISPATCHER => [
            "stream error: request parse error",
            "stream error: I/O error",
            "stream error: request did not complete within the specified timeout",
            "stream error: connection shutdown timeout",
            "stream error: handler dropped payload before reading EOF",
        ]
        .iter()
        .any(|prefix| message.starts_with(prefix)),
        "actix_http::ws::codec" => message.starts_with("Unfinished fragment"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Captured {
        type Writer = Captured;
        fn make_writer(&'w self) -> Captured {
            self.clone()
        }
    }

    /// What the subscriber built from `directives` writes for actix-http's log lines.
    fn logged(directives: &str) -> String {
        let out = Captured::default();
        let client_errors = ClientErrors::default();
        let subscriber = subscriber(
            LogFormat::Json,
            EnvFilter::new(directives),
            out.clone(),
            client_errors.clone(),
        );
        tracing::subscriber::with_default(subscriber, || {
            client_errors.show(tracing::enabled!(target: DISPATCHER, Level::DEBUG));
            tracing::error!(target: "actix_http::h1::dispatcher", "stream error: request parse error: invalid Header provided");
            tracing::error!(target: "actix_http::h1::dispatcher", "stream error: I/O error: connection reset by peer");
            tracing::error!(target: "actix_http::ws::codec", "Unfinished fragment Text");
            tracing::error!(target: "actix_http::h1::dispatcher", "stream error: body error: export failed");
            tracing::error!(target: "tenantry::startup", "something of our own");
        });
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn client_caused_connection_errors_are_debug_only() {
        let default = logged(DEFAULT_FILTER);
        assert!(!default.contains("request parse error"), "{default}");
        assert!(!default.contains("connection reset"), "{default}");
        assert!(!default.contains("Unfinished fragment"), "{default}");
        assert!(default.contains("body error: export failed"), "{default}");
        assert!(default.contains("something of our own"), "{default}");

        let debugging = logged("info,actix_http=debug");
        assert!(debugging.contains("request parse error"), "{debugging}");
        assert!(debugging.contains("Unfinished fragment"), "{debugging}");
    }
}

//! Tracing across services: a span per handled record and per publish, named and attributed
//! per the OpenTelemetry messaging conventions, and the W3C trace context carried in the
//! `traceparent` / `tracestate` headers (the CloudEvents distributed tracing extension on Kafka).
//!
//! - On publish, the headers carry the context of the publish span (with the `otel` feature
//!   and an OpenTelemetry layer installed); otherwise, inside a handler, the context the
//!   handled record came with, so that a trace passes through a service that exports nothing.
//! - On consume, the record's context is the parent of its process span: one trace runs
//!   producer → handler → cascaded events → the next service.

use std::sync::Arc;

use tracing::Span;

use crate::flows::context::Context;
use crate::flows::layer::{BoxFuture, HandleLayer, Handled, Next, Outgoing, PublishLayer, PublishResult};

/// The target of eventkit's spans (`RUST_LOG=eventkit::trace=off` drops them from a subscriber
/// of the program's own; `run()`'s default one keeps them out of log lines).
pub(crate) const TARGET: &str = "eventkit::trace";

/// The W3C trace context headers.
pub(crate) const TRACEPARENT: &str = "traceparent";
pub(crate) const TRACESTATE: &str = "tracestate";

/// A trace context as it travels in headers.
#[derive(Debug, Clone, Default)]
pub(crate) struct TraceHeaders {
    pub traceparent: String,
    pub tracestate: Option<String>,
}

impl TraceHeaders {
    /// The context of a record, per W3C Trace Context: none unless it carries a valid
    /// `traceparent` (a record without one starts a new trace), and its `tracestate` only when
    /// that is valid, capped at 32 members and 512 bytes.
    pub(crate) fn of(headers: impl Fn(&str) -> Option<String>) -> Option<TraceHeaders> {
        let traceparent = headers(TRACEPARENT).filter(|t| is_traceparent(t))?;
        // A version above 00 may carry more fields; only the four known ones go on.
        let traceparent = traceparent[..55].to_owned();
        Some(TraceHeaders { traceparent, tracestate: headers(TRACESTATE).and_then(|s| tracestate(&s)) })
    }

}

/// A W3C `traceparent`: `<version>-<32 hex>-<16 hex>-<2 hex>` in lower-case hex, the ids not
/// all zero; version `00` exactly so, a later version (not `ff`) possibly followed by `-...`.
fn is_traceparent(t: &str) -> bool {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let Some(head) = t.get(..55) else { return false };
    let rest = &t[55..];
    let parts: Vec<&str> = head.split('-').collect();
    let [version, trace, parent, flags] = parts.as_slice() else { return false };
    let well_formed = version.len() == 2 && hex(version) && *version != "ff" && trace.len() == 32 && hex(trace) && parent.len() == 16 && hex(parent) && flags.len() == 2 && hex(flags);
    let ids = trace.bytes().any(|b| b != b'0') && parent.bytes().any(|b| b != b'0');
    let tail = if *version == "00" { rest.is_empty() } else { rest.is_empty() || rest.starts_with('-') };
    well_formed && ids && tail
}

/// The most `tracestate` members passed on.
const TRACESTATE_MEMBERS: usize = 32;
/// The most bytes of `tracestate` passed on.
const TRACESTATE_BYTES: usize = 512;

/// A W3C `tracestate` as it may go on: `None` when a member is malformed or a key repeats
/// (the header is dropped whole); at most 32 members; over 512 bytes, members over 128 bytes
/// go first, then members from the right, as the specification asks.
fn tracestate(value: &str) -> Option<String> {
    let mut members: Vec<&str> = Vec::new();
    let mut keys = std::collections::HashSet::new();
    for member in value.split(',').map(|m| m.trim_matches([' ', '\t'])).filter(|m| !m.is_empty()) {
        let (key, val) = member.split_once('=')?;
        if !is_tracestate_key(key) || !is_tracestate_value(val) || !keys.insert(key) {
            return None;
        }
        members.push(member);
    }
    members.truncate(TRACESTATE_MEMBERS);
    let size = |m: &[&str]| m.iter().map(|x| x.len()).sum::<usize>() + m.len().saturating_sub(1);
    if size(&members) > TRACESTATE_BYTES {
        members.retain(|m| m.len() <= 128);
        while size(&members) > TRACESTATE_BYTES {
            members.pop();
        }
    }
    (!members.is_empty()).then(|| members.join(","))
}

/// `simple-key` or `tenant-id@system-id`.
fn is_tracestate_key(key: &str) -> bool {
    let tail = |s: &[u8]| s.iter().all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'*' | b'/'));
    match key.split_once('@') {
        None => key.len() <= 256 && key.as_bytes().first().is_some_and(u8::is_ascii_lowercase) && tail(&key.as_bytes()[1..]),
        Some((tenant, system)) => {
            let t = tenant.as_bytes();
            let s = system.as_bytes();
            (1..=241).contains(&t.len())
                && (t[0].is_ascii_lowercase() || t[0].is_ascii_digit())
                && tail(&t[1..])
                && (1..=14).contains(&s.len())
                && s[0].is_ascii_lowercase()
                && tail(&s[1..])
        }
    }
}

/// 1 to 256 printable ASCII characters but `,` and `=`, the last one not a space.
fn is_tracestate_value(value: &str) -> bool {
    let v = value.as_bytes();
    (1..=256).contains(&v.len()) && v.iter().all(|&b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=') && v[v.len() - 1] != b' '
}

tokio::task_local! {
    /// The trace context of the record being handled (for publishes from its handlers).
    static INCOMING: Option<TraceHeaders>;
}

/// The span of handling one record by one handler.
fn process_span(ctx: &Context) -> Span {
    let record = ctx.record();
    tracing::info_span!(
        target: TARGET,
        "eventkit.process",
        otel.name = %format_args!("process {}", record.topic),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = %record.topic,
        messaging.consumer.group.name = ctx.group(),
        messaging.destination.partition.id = %record.partition,
        messaging.kafka.offset = record.offset,
        messaging.kafka.message.key = record.key.as_deref().and_then(|k| std::str::from_utf8(k).ok()),
        messaging.message.id = ctx.event_id(),
        cloudevents.event_id = ctx.event_id(),
        cloudevents.event_type = ctx.event_type(),
        eventkit.handler = ctx.handler_name(),
        error.type = tracing::field::Empty,
    )
}

/// The span of publishing one event.
fn send_span(topic: &str) -> Span {
    tracing::info_span!(
        target: TARGET,
        "eventkit.send",
        otel.name = %format_args!("send {topic}"),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.operation.name = "send",
        messaging.destination.name = topic,
        error.type = tracing::field::Empty,
    )
}

/// Marks a span failed.
fn failed(span: &Span, kind: &str) {
    span.record("otel.status_code", "ERROR");
    span.record("error.type", kind);
}

/// The trace context a record came with (validated), from its headers.
fn incoming(ctx: &Context) -> Option<TraceHeaders> {
    let headers = &ctx.metadata().other_headers;
    TraceHeaders::of(|name| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).and_then(|(_, v)| String::from_utf8(v.clone()).ok()))
}

/// Whether eventkit's spans are recorded by the program's subscriber.
fn spans_on() -> bool {
    tracing::span_enabled!(target: TARGET, tracing::Level::INFO)
}

/// The context a publish made now carries: the current span's, or the handled record's.
fn outgoing() -> Option<TraceHeaders> {
    #[cfg(feature = "otel")]
    if let Some(context) = otel::current() {
        return Some(context);
    }
    INCOMING.try_with(Clone::clone).ok().flatten()
}

/// Tracing across services, as a layer around handling and publishing (installed by every app):
/// a span per handling and per publish, and the W3C trace context passed on from each handled
/// record to what its handler publishes. A record that carries no context, with no subscriber
/// recording eventkit's spans, costs two checks and no allocation.
pub(crate) struct Tracing;

impl HandleLayer for Tracing {
    fn wraps(&self, ctx: &Context) -> bool {
        spans_on() || ctx.metadata().other_headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(TRACEPARENT))
    }

    fn around(&self, ctx: Arc<Context>, next: Next) -> BoxFuture<Handled> {
        let incoming = incoming(&ctx);
        let span = process_span(&ctx);
        #[cfg(feature = "otel")]
        otel::set_parent(&span, incoming.as_ref());
        let handling = INCOMING.scope(incoming, tracing::Instrument::instrument(next.run(ctx), span.clone()));
        Box::pin(async move {
            let result = handling.await;
            if let Err(e) = &result {
                failed(&span, e.kind());
            }
            result
        })
    }
}

impl PublishLayer for Tracing {
    fn before(&self, event: &mut Outgoing<'_>) -> crate::Result<()> {
        let span = if spans_on() { Some(send_span(event.topic)) } else { None };
        if !event.has_header(TRACEPARENT) {
            // The send span's context when it is recorded, otherwise the current one.
            let context = match &span {
                #[cfg(feature = "otel")]
                Some(span) => otel::of(span).or_else(outgoing),
                _ => outgoing(),
            };
            if let Some(context) = context {
                event.add_header(TRACEPARENT, context.traceparent.as_bytes());
                if let Some(state) = &context.tracestate {
                    event.add_header(TRACESTATE, state.as_bytes());
                }
            }
        }
        if let Some(span) = span {
            event.keep(SendSpan(span));
        }
        Ok(())
    }

    fn after(&self, result: &mut PublishResult<'_>) {
        if let Some(SendSpan(span)) = result.kept::<SendSpan>() {
            if result.result.is_err() {
                failed(&span, "publish");
            }
        }
    }
}

/// The span of a publish, from `before` to `after`.
struct SendSpan(Span);

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::TraceHeaders;

    struct Headers<'a>(&'a TraceHeaders);

    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            match key {
                super::TRACEPARENT => Some(&self.0.traceparent),
                super::TRACESTATE => self.0.tracestate.as_deref(),
                _ => None,
            }
        }
        fn keys(&self) -> Vec<&str> {
            vec![super::TRACEPARENT, super::TRACESTATE]
        }
    }

    #[derive(Default)]
    struct Out(TraceHeaders);

    impl Injector for Out {
        fn set(&mut self, key: &str, value: String) {
            match key {
                super::TRACEPARENT => self.0.traceparent = value,
                super::TRACESTATE if !value.is_empty() => self.0.tracestate = Some(value),
                _ => {}
            }
        }
    }

    pub(super) fn set_parent(span: &tracing::Span, incoming: Option<&TraceHeaders>) {
        if let Some(incoming) = incoming {
            if !span.is_disabled() {
                let parent = TraceContextPropagator::new().extract(&Headers(incoming));
                let _ = span.set_parent(parent);
            }
        }
    }

    /// The current span's context, when an OpenTelemetry layer records it.
    pub(super) fn current() -> Option<TraceHeaders> {
        of(&tracing::Span::current())
    }

    /// A span's context, when an OpenTelemetry layer records it.
    pub(super) fn of(span: &tracing::Span) -> Option<TraceHeaders> {
        if span.is_disabled() {
            return None;
        }
        let context = span.context();
        if !context.span().span_context().is_valid() {
            return None;
        }
        let mut out = Out::default();
        TraceContextPropagator::new().inject_context(&context, &mut out);
        (!out.0.traceparent.is_empty()).then_some(out.0)
    }
}

/// The OTLP exporter `run()`'s default subscriber adds when the `otlp` feature is on and the
/// standard variables ask for it (`OTEL_EXPORTER_OTLP_ENDPOINT` or
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; `OTEL_TRACES_EXPORTER=none` and `OTEL_SDK_DISABLED=true`
/// turn it off). Spans go out in batches over OTLP/HTTP; `OTEL_SERVICE_NAME` names the service
/// (default: the app's service name).
#[cfg(feature = "otlp")]
pub(crate) mod otlp {
    use std::sync::OnceLock;

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;

    static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

    fn wanted() -> bool {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        !disabled && (var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() || var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some())
    }

    /// A layer exporting spans over OTLP, if the environment asks for one.
    pub(crate) fn layer<S>(service: &str) -> Option<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        if !wanted() {
            return None;
        }
        let exporter = match opentelemetry_otlp::SpanExporter::builder().with_http().build() {
            Ok(exporter) => exporter,
            Err(e) => {
                eprintln!("eventkit: cannot export spans over OTLP: {e}");
                return None;
            }
        };
        let mut resource = opentelemetry_sdk::Resource::builder();
        if std::env::var("OTEL_SERVICE_NAME").is_err() {
            resource = resource.with_service_name(service.to_owned());
        }
        let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
        let tracer = provider.tracer("eventkit");
        let _ = PROVIDER.set(provider);
        Some(tracing_opentelemetry::layer().with_tracer(tracer))
    }

    /// Sends the spans not exported yet (at shutdown).
    pub(crate) fn flush() {
        if let Some(provider) = PROVIDER.get() {
            let _ = provider.force_flush();
        }
    }
}

/// Tracing as a surface: its layer around every handling (outermost) and publish, the OTLP
/// exporter for the default subscriber (feature `otlp`), flushed when the app stops.
struct Surface;

impl crate::app::surface::Surface for Surface {
    fn name(&self) -> &'static str {
        "tracing"
    }

    fn order(&self) -> u8 {
        0
    }

    #[cfg(feature = "otlp")]
    fn log_layer(&self, service: &str) -> Option<crate::app::surface::LogLayer> {
        otlp::layer(service).map(|l| Box::new(l) as crate::app::surface::LogLayer)
    }

    fn publish_layers(&self) -> Vec<Arc<dyn PublishLayer>> {
        vec![Arc::new(Tracing)]
    }

    fn group(&self, _plan: &crate::flows::registry::GroupPlan) -> crate::app::surface::GroupParts {
        crate::app::surface::GroupParts { layers: vec![Arc::new(Tracing)], watches: Vec::new() }
    }

    #[cfg(feature = "otlp")]
    fn stopped(&self) {
        otlp::flush();
    }
}

inventory::submit!(crate::app::surface::Entry(&Surface));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_traceparents_are_taken() {
        assert!(is_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        assert!(is_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"), "a later version may add fields");
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-xyz-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        ] {
            assert!(!is_traceparent(bad), "{bad}");
        }
    }

    #[test]
    fn tracestate_is_validated_and_capped() {
        assert_eq!(tracestate("congo=t61rcWkgMzE, rojo=00f067aa0ba902b7").as_deref(), Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"));
        assert_eq!(tracestate("acme@sys=1").as_deref(), Some("acme@sys=1"));
        for bad in ["Congo=x", "congo", "congo=", "a=1,a=2", "k=v=x", "k=x\ty", "k=\u{7f}", "@s=1", "t@=1"] {
            assert_eq!(tracestate(bad), None, "{bad:?}");
        }
        let many: Vec<String> = (0..40).map(|i| format!("k{i}=v")).collect();
        let capped = tracestate(&many.join(",")).unwrap();
        assert_eq!(capped.split(',').count(), 32, "32 members at most");
        assert!(capped.starts_with("k0=v,") && capped.ends_with(",k31=v"));
        let long = format!("big={},a=1,b={}", "x".repeat(200), "y".repeat(120));
        let mut members = vec![long];
        members.extend((0..10).map(|i| format!("m{i}={}", "z".repeat(40))));
        let cut = tracestate(&members.join(",")).unwrap();
        assert!(cut.len() <= 512 && !cut.contains("big=") && cut.starts_with("a=1,b=y"), "members over 128 bytes go first: {cut}");
        assert_eq!(tracestate(&format!("k={}", "x".repeat(999_900))), None, "a value over 256 bytes is malformed");
    }
}

//! OpenTelemetry export of berthd's `tracing` spans, with containerd's
//! configuration (off unless an endpoint is set):
//!
//! ```toml
//! [plugins."io.containerd.tracing.processor.v1.otlp"]
//!   endpoint = "http://127.0.0.1:4318"   # or :4317 with protocol = "grpc"
//!   protocol = "http/protobuf"           # "grpc" or "http/protobuf"
//! [plugins."io.containerd.internal.v1.tracing"]
//!   sampling_ratio = 1.0
//!   service_name = "berthd"
//! ```
//!
//! Reading the configuration is always built; the exporter only with the
//! `otel` cargo feature (a berthd without it warns that it ignores the
//! section).

use crate::config::Config;

/// The OTLP processor's config section.
pub(crate) const PROCESSOR_SECTION: &str = "io.containerd.tracing.processor.v1.otlp";
/// The tracing plugin's config section (sampling, service name).
pub(crate) const TRACING_SECTION: &str = "io.containerd.internal.v1.tracing";

/// How OTLP data travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP over gRPC (collectors listen on 4317).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (collectors listen on 4318).
    HttpProtobuf,
}

/// Where and how spans are exported.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    /// The collector's endpoint (`http://host:port`).
    pub endpoint: String,
    /// The transport.
    pub protocol: Protocol,
    /// Fraction of traces kept, 0.0–1.0.
    pub sampling_ratio: f64,
    /// `service.name` of the exported spans.
    pub service_name: String,
}

/// The export configuration in `config`, `Ok(None)` when no endpoint is set;
/// an error names a bad value.
pub fn config_of(config: &Config) -> Result<Option<OtlpConfig>, String> {
    let Some(processor) = config.plugin_section(PROCESSOR_SECTION) else {
        return Ok(None);
    };
    let endpoint = match processor.get("endpoint") {
        None => return Ok(None),
        Some(toml::Value::String(s)) if s.is_empty() => return Ok(None),
        Some(toml::Value::String(s)) => s.clone(),
        Some(v) => {
            return Err(format!(
                "{PROCESSOR_SECTION}: endpoint must be a string, not {v}"
            ));
        }
    };
    let protocol = match processor.get("protocol").and_then(toml::Value::as_str) {
        None | Some("http/protobuf") => Protocol::HttpProtobuf,
        Some("grpc") => Protocol::Grpc,
        Some(other) => {
            return Err(format!(
                "{PROCESSOR_SECTION}: protocol {other:?} is not supported (use \"grpc\" or \"http/protobuf\")"
            ));
        }
    };
    let tracing = config.plugin_section(TRACING_SECTION);
    let sampling_ratio = match tracing.and_then(|t| t.get("sampling_ratio")) {
        None => 1.0,
        Some(toml::Value::Float(f)) if (0.0..=1.0).contains(f) => *f,
        Some(toml::Value::Integer(i)) if (0..=1).contains(i) => *i as f64,
        Some(v) => {
            return Err(format!(
                "{TRACING_SECTION}: sampling_ratio must be between 0 and 1, not {v}"
            ));
        }
    };
    let service_name = tracing
        .and_then(|t| t.get("service_name"))
        .and_then(toml::Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("berthd")
        .to_string();
    Ok(Some(OtlpConfig {
        endpoint,
        protocol,
        sampling_ratio,
        service_name,
    }))
}

#[cfg(feature = "otel")]
pub use export::{Exporter, layer};

#[cfg(feature = "otel")]
mod export {
    use opentelemetry::KeyValue;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};

    use super::{OtlpConfig, Protocol};

    /// The running exporter; [`Exporter::shutdown`] flushes what is queued.
    #[derive(Debug)]
    pub struct Exporter(SdkTracerProvider);

    impl Exporter {
        /// Sends the spans still queued and stops.
        pub fn shutdown(self) {
            if let Err(e) = self.0.shutdown() {
                tracing::warn!(error = %e, "OpenTelemetry exporter shutdown");
            }
        }
    }

    /// A `tracing` layer exporting spans as `config` says; call inside a
    /// tokio runtime (the gRPC exporter's connection runs on it).
    pub fn layer<S>(
        config: &OtlpConfig,
    ) -> Result<
        (
            impl tracing_subscriber::Layer<S> + Send + Sync + 'static,
            Exporter,
        ),
        String,
    >
    where
        S: tracing::Subscriber
            + for<'a> tracing_subscriber::registry::LookupSpan<'a>
            + Send
            + Sync
            + 'static,
    {
        let exporter = match config.protocol {
            Protocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(config.endpoint.clone())
                .build(),
            Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(format!(
                    "{}/v1/traces",
                    config.endpoint.trim_end_matches('/')
                ))
                .build(),
        }
        .map_err(|e| format!("OTLP exporter for {}: {e}", config.endpoint))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sampling_ratio,
            ))))
            .with_resource(
                opentelemetry_sdk::Resource::builder_empty()
                    .with_attribute(KeyValue::new("service.name", config.service_name.clone()))
                    .build(),
            )
            .build();
        let tracer = provider.tracer("berthd");
        Ok((
            tracing_opentelemetry::layer().with_tracer(tracer),
            Exporter(provider),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<OtlpConfig>, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config_of(&config)
    }

    #[test]
    fn off_without_an_endpoint() {
        assert_eq!(parse("version = 2"), Ok(None));
        assert_eq!(
            parse(
                "version = 2\n[plugins.\"io.containerd.tracing.processor.v1.otlp\"]\nendpoint = \"\""
            ),
            Ok(None)
        );
    }

    #[test]
    fn containerds_keys_are_read() {
        let c = parse(
            "version = 2\n[plugins.\"io.containerd.tracing.processor.v1.otlp\"]\nendpoint = \"http://127.0.0.1:4317\"\nprotocol = \"grpc\"\n[plugins.\"io.containerd.internal.v1.tracing\"]\nsampling_ratio = 0.5\nservice_name = \"node-7\"\n",
        );
        assert_eq!(
            c,
            Ok(Some(OtlpConfig {
                endpoint: "http://127.0.0.1:4317".into(),
                protocol: Protocol::Grpc,
                sampling_ratio: 0.5,
                service_name: "node-7".into(),
            }))
        );
    }

    #[test]
    fn bad_values_are_named() {
        let e = parse(
            "version = 2\n[plugins.\"io.containerd.tracing.processor.v1.otlp\"]\nendpoint = \"http://x\"\nprotocol = \"carrier-pigeon\"\n",
        );
        assert!(
            e.as_ref().is_err_and(|e| e.contains("carrier-pigeon")),
            "{e:?}"
        );
        let e = parse(
            "version = 2\n[plugins.\"io.containerd.tracing.processor.v1.otlp\"]\nendpoint = \"http://x\"\n[plugins.\"io.containerd.internal.v1.tracing\"]\nsampling_ratio = 2.5\n",
        );
        assert!(
            e.as_ref().is_err_and(|e| e.contains("sampling_ratio")),
            "{e:?}"
        );
    }
}

//! Where and how spans are exported: the command-line options and the standard OpenTelemetry
//! environment variables, read into a [`Config`].

use http::{HeaderName, HeaderValue, Uri};

use super::otlp;

/// The OTLP/HTTP encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `http/protobuf`.
    Protobuf,
    /// `http/json`.
    Json,
}

impl Protocol {
    pub(super) fn content_type(self) -> &'static str {
        match self {
            Protocol::Protobuf => "application/x-protobuf",
            Protocol::Json => "application/json",
        }
    }
}

/// Where and how spans are exported.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The traces endpoint, e.g. `http://otel-collector:4318/v1/traces`.
    pub endpoint: Uri,
    /// The encoding.
    pub protocol: Protocol,
    /// Headers every export request carries (e.g. a collector's API key).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The share of new traces recorded, 0 to 1.
    pub sample_ratio: f64,
    /// Who exports.
    pub resource: otlp::Resource,
}

/// The tracing options given on the command line (each also an `UPROX_*` variable).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--otlp-endpoint`: the collector's OTLP/HTTP base URL or traces URL.
    pub endpoint: Option<String>,
    /// `--otlp-protocol`.
    pub protocol: Option<String>,
    /// `--otlp-header name=value`, repeated.
    pub headers: Vec<String>,
    /// `--trace-sample-ratio`.
    pub sample_ratio: Option<f64>,
}

impl Config {
    /// The config from the command-line `options` and the OpenTelemetry variables `env` reads;
    /// `None` when no endpoint is set (tracing off).
    ///
    /// - Endpoint: `--otlp-endpoint` (a URL without a path gets `/v1/traces`), else
    ///   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (as is), else `OTEL_EXPORTER_OTLP_ENDPOINT` plus
    ///   `/v1/traces`.
    /// - Protocol: `--otlp-protocol`, else `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else
    ///   `OTEL_EXPORTER_OTLP_PROTOCOL`, else `http/protobuf`; `grpc` is refused.
    /// - Headers: `--otlp-header`, and `OTEL_EXPORTER_OTLP_HEADERS` and `…_TRACES_HEADERS`
    ///   (`name=value` pairs, comma-separated, values percent-encoded).
    /// - Sampling: `--trace-sample-ratio`, else `OTEL_TRACES_SAMPLER` (`always_on`, `always_off`,
    ///   `traceidratio`, `parentbased_*`) with `OTEL_TRACES_SAMPLER_ARG`, else 1. Requests that
    ///   carry a `traceparent` always follow its decision.
    /// - Resource: `service.name` from `OTEL_SERVICE_NAME` (default `uprox-gateway`),
    ///   `service.version`, `service.instance.id` from `HOSTNAME`, and `OTEL_RESOURCE_ATTRIBUTES`.
    pub fn from_options(options: &Options, env: impl Fn(&str) -> Option<String>) -> Result<Option<Config>, String> {
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let endpoint =
            match (&options.endpoint, env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), env("OTEL_EXPORTER_OTLP_ENDPOINT")) {
                (Some(flag), ..) => {
                    let uri = parse_url(flag, "--otlp-endpoint")?;
                    if matches!(uri.path(), "" | "/") { join(flag, "/v1/traces") } else { flag.clone() }
                }
                (None, Some(traces), _) => traces,
                (None, None, Some(base)) => join(&base, "/v1/traces"),
                (None, None, None) => return Ok(None),
            };
        let endpoint = parse_url(&endpoint, "the OTLP endpoint")?;
        let protocol = options
            .protocol
            .clone()
            .or_else(|| env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
            .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"));
        let protocol = match protocol.as_deref().map(str::trim) {
            None | Some("http/protobuf") => Protocol::Protobuf,
            Some("http/json") => Protocol::Json,
            Some("grpc") => {
                return Err(
                    "OTLP over gRPC is not supported: use http/protobuf or http/json (the collector's port 4318)"
                        .to_owned(),
                );
            }
            Some(other) => return Err(format!("unknown OTLP protocol {other:?}: use http/protobuf or http/json")),
        };
        let mut headers = Vec::new();
        let from_env = [env("OTEL_EXPORTER_OTLP_HEADERS"), env("OTEL_EXPORTER_OTLP_TRACES_HEADERS")];
        let pairs = from_env.iter().flatten().flat_map(|list| list.split(',')).map(|pair| (pair, true));
        for (pair, encoded) in pairs.chain(options.headers.iter().map(|pair| (pair.as_str(), false))) {
            if pair.trim().is_empty() {
                continue;
            }
            let (name, value) =
                pair.split_once('=').ok_or_else(|| format!("OTLP header {pair:?} is not name=value"))?;
            let value = if encoded { percent_decode(value.trim()) } else { value.trim().to_owned() };
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| format!("OTLP header name {:?} is not a header name", name.trim()))?;
            let value =
                HeaderValue::from_str(&value).map_err(|_| format!("OTLP header {name} has an invalid value"))?;
            headers.retain(|(n, _): &(HeaderName, HeaderValue)| *n != name);
            headers.push((name, value));
        }
        let sample_ratio = match options.sample_ratio {
            Some(ratio) => ratio,
            None => match env("OTEL_TRACES_SAMPLER").as_deref().map(str::trim) {
                Some("always_off" | "parentbased_always_off") => 0.0,
                Some("traceidratio" | "parentbased_traceidratio") => {
                    env("OTEL_TRACES_SAMPLER_ARG").and_then(|v| v.trim().parse().ok()).unwrap_or(1.0)
                }
                _ => 1.0,
            },
        };
        if !(0.0..=1.0).contains(&sample_ratio) {
            return Err(format!("the trace sample ratio must be between 0 and 1, not {sample_ratio}"));
        }
        let mut resource = vec![("service.name".to_owned(), "uprox-gateway".to_owned())];
        for pair in env("OTEL_RESOURCE_ATTRIBUTES").iter().flat_map(|list| list.split(',')) {
            if let Some((key, value)) = pair.split_once('=') {
                set(&mut resource, key.trim(), percent_decode(value.trim()));
            }
        }
        if let Some(name) = env("OTEL_SERVICE_NAME") {
            set(&mut resource, "service.name", name);
        }
        set(&mut resource, "service.version", env!("CARGO_PKG_VERSION").to_owned());
        if let Some(host) = env("HOSTNAME")
            && !resource.iter().any(|(k, _)| k == "service.instance.id")
        {
            set(&mut resource, "service.instance.id", host);
        }
        Ok(Some(Config {
            endpoint,
            protocol,
            headers,
            sample_ratio,
            resource: otlp::Resource { attributes: resource },
        }))
    }
}

fn parse_url(text: &str, what: &str) -> Result<Uri, String> {
    let uri: Uri = text.trim().parse().map_err(|_| format!("{what} {text:?} is not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(uri),
        _ => Err(format!("{what} {text:?} is not an http:// or https:// URL")),
    }
}

fn join(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim().trim_end_matches('/'))
}

fn set(attributes: &mut Vec<(String, String)>, key: &str, value: String) {
    match attributes.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value,
        None => attributes.push((key.to_owned(), value)),
    }
}

/// `%XX` escapes decoded (the W3C Baggage encoding of the OTLP header and resource variables);
/// malformed escapes are kept as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (bytes.get(i + 1).and_then(|c| hex(*c)), bytes.get(i + 2).and_then(|c| hex(*c)))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn config(options: &Options, env: &[(&str, &str)]) -> Result<Option<Config>, String> {
        Config::from_options(options, |name| env.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned()))
    }

    fn endpoint(options: &Options, env: &[(&str, &str)]) -> String {
        config(options, env).unwrap().unwrap().endpoint.to_string()
    }

    #[test]
    fn off_without_an_endpoint() {
        assert_eq!(config(&Options::default(), &[("OTEL_SERVICE_NAME", "x")]), Ok(None));
        assert_eq!(config(&Options::default(), &[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]), Ok(None));
    }

    #[test]
    fn the_endpoint_comes_from_the_flag_then_the_standard_variables() {
        let flag = |url: &str| Options { endpoint: Some(url.to_owned()), ..Options::default() };
        let none = Options::default();
        assert_eq!(endpoint(&flag("http://collector:4318"), &[]), "http://collector:4318/v1/traces");
        assert_eq!(endpoint(&flag("http://collector:4318/"), &[]), "http://collector:4318/v1/traces");
        assert_eq!(endpoint(&flag("https://otlp.example/api/traces"), &[]), "https://otlp.example/api/traces");
        let both = [
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4318/custom"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318/"),
        ];
        assert_eq!(endpoint(&flag("http://flag:4318"), &both), "http://flag:4318/v1/traces");
        assert_eq!(endpoint(&none, &both), "http://traces:4318/custom");
        assert_eq!(endpoint(&none, &both[1..]), "http://base:4318/v1/traces");
        for bad in ["collector:4318", "ftp://collector", "not a url"] {
            assert!(config(&flag(bad), &[]).is_err(), "{bad}");
        }
    }

    #[test]
    fn protocol_headers_sampling_and_resource() {
        let options = Options {
            endpoint: Some("http://c:4318".to_owned()),
            headers: vec!["x-api-key=flag".to_owned()],
            ..Options::default()
        };
        let env = [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=env,authorization=Basic%20abc%3D"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,service.name=ignored"),
            ("OTEL_SERVICE_NAME", "gateway-eu"),
            ("HOSTNAME", "uprox-gateway-abc"),
        ];
        let config = config(&options, &env).unwrap().unwrap();
        assert_eq!(config.protocol, Protocol::Json);
        let headers: Vec<(String, &str)> =
            config.headers.iter().map(|(n, v)| (n.to_string(), v.to_str().unwrap())).collect();
        assert_eq!(headers, [("authorization".to_owned(), "Basic abc="), ("x-api-key".to_owned(), "flag")]);
        assert_eq!(config.sample_ratio, 0.25);
        let resource: Vec<(&str, &str)> =
            config.resource.attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            resource,
            [
                ("service.name", "gateway-eu"),
                ("deployment.environment", "prod"),
                ("service.version", env!("CARGO_PKG_VERSION")),
                ("service.instance.id", "uprox-gateway-abc"),
            ]
        );
    }

    #[test]
    fn bad_settings_are_refused_with_a_reason() {
        let on = |protocol: Option<&str>, ratio: Option<f64>, header: Option<&str>| Options {
            endpoint: Some("http://c:4318".to_owned()),
            protocol: protocol.map(str::to_owned),
            sample_ratio: ratio,
            headers: header.map(str::to_owned).into_iter().collect(),
        };
        let grpc = config(&on(Some("grpc"), None, None), &[]).unwrap_err();
        assert!(grpc.contains("gRPC is not supported"), "{grpc}");
        assert!(config(&on(Some("thrift"), None, None), &[]).is_err());
        assert!(config(&on(None, Some(1.5), None), &[]).is_err());
        assert!(config(&on(None, None, Some("no-equals")), &[]).is_err());
        assert!(config(&on(None, None, Some("bad name=x")), &[]).is_err());
        let default = config(&on(None, None, None), &[("OTEL_TRACES_SAMPLER", "always_off")]).unwrap().unwrap();
        assert_eq!((default.protocol, default.sample_ratio), (Protocol::Protobuf, 0.0));
    }
}

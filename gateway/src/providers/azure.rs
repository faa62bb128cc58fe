//! Azure OpenAI upstreams: the same wire format as OpenAI, addressed by deployment. A chat
//! completion goes to `{endpoint}/openai/deployments/{deployment}/chat/completions?api-version=…`
//! (embeddings to `…/{deployment}/embeddings?api-version=…`) with the key in `api-key`; the endpoint is the key's own (one Azure resource per key) or the
//! Provider's `baseUrl`. The deployment is the model the client asked for — from the URL on
//! the Azure SDK's deployment routes, from the body otherwise.
//!
//! The Responses API exists only on Azure's v1 surface, `{endpoint}/openai/v1/responses`: no
//! deployment in the path (the body's `model` names it) and no dated `api-version` (the Provider's
//! `apiVersion` is sent only when it is `preview` or `latest`, the v1 surface's own values).

use http::Uri;

use crate::error::GatewayError;
use crate::snapshot::ProviderEntry;

/// The `api-version` sent when the Provider names none: the current GA version.
pub const DEFAULT_API_VERSION: &str = "2024-10-21";

/// Whether `name` can be an Azure deployment name (and so a URL path segment as is).
pub fn is_deployment_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The URI of `operation` (`chat/completions`, `embeddings`) on `deployment` of this provider.
pub fn deployment_uri(provider: &ProviderEntry, deployment: &str, operation: &str) -> Result<Uri, GatewayError> {
    if !is_deployment_name(deployment) {
        return Err(GatewayError::InvalidRequest(format!(
            "`{deployment}` is not a valid Azure deployment name (letters, digits, '-', '_' and '.', at most 64)"
        )));
    }
    let version = provider.config.api_version.as_deref().unwrap_or(DEFAULT_API_VERSION);
    let base = provider.config.base_url.trim_end_matches('/');
    let base = base.strip_suffix("/openai").unwrap_or(base);
    format!("{base}/openai/deployments/{deployment}/{operation}?api-version={version}").parse().map_err(|_| {
        GatewayError::UpstreamUnavailable("the Azure endpoint of this provider is not a valid URL".to_owned())
    })
}

/// `{endpoint}/openai/v1/responses` of a provider; `None` when its base URL is not a URL.
pub fn responses_url(config: &uprox_crds::config::ProviderConfig) -> Option<Uri> {
    let base = config.base_url.trim_end_matches('/');
    let base = base.strip_suffix("/openai/v1").or_else(|| base.strip_suffix("/openai")).unwrap_or(base);
    let query = match config.api_version.as_deref() {
        Some(v @ ("preview" | "latest")) => format!("?api-version={v}"),
        _ => String::new(),
    };
    let uri: Uri = format!("{base}/openai/v1/responses{query}").parse().ok()?;
    (uri.scheme().is_some() && uri.authority().is_some()).then_some(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_names() {
        assert!(is_deployment_name("gpt-4o-mini_2024.1"));
        assert!(!is_deployment_name(""));
        assert!(!is_deployment_name("a/b"));
        assert!(!is_deployment_name("a?b"));
        assert!(!is_deployment_name(&"x".repeat(65)));
    }
}

//! [`Usage`]: the tokens of one request in disjoint buckets, each billed at one rate, and
//! parsers for the usage objects upstreams really send.
//!
//! The providers count differently, and this is where that is settled once:
//! - OpenAI (chat, Responses): `prompt_tokens` / `input_tokens` **include** the cached tokens
//!   (`*_tokens_details.cached_tokens`), so uncached input = prompt − cached. Reasoning tokens
//!   are included in `completion_tokens` / `output_tokens`.
//! - Anthropic Messages: `input_tokens` **excludes** `cache_read_input_tokens` and
//!   `cache_creation_input_tokens`; the prompt is their sum. `cache_creation` splits writes into
//!   the 5-minute and the 1-hour cache.
//! - Embeddings: input only.
//!
//! The parsers take any serde deserializer: a `&serde_json::Value`, or a
//! `&mut serde_json::Deserializer` over the raw bytes (no intermediate value).

use serde::Deserialize;

/// Tokens of one request. The buckets are disjoint: every prompt token is in exactly one of
/// `input`, `cache_read`, `cache_write`, `cache_write_1h`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens billed at the full input rate (not read from or written to a cache).
    pub input: u64,
    /// Output tokens, reasoning tokens included.
    pub output: u64,
    /// Prompt tokens read from the prompt cache.
    pub cache_read: u64,
    /// Prompt tokens written to the prompt cache (Anthropic's 5-minute cache; OpenAI models
    /// that report `cache_write_tokens`).
    pub cache_write: u64,
    /// Prompt tokens written to Anthropic's 1-hour cache.
    pub cache_write_1h: u64,
    /// Reasoning tokens: already counted in `output`, kept for reporting only.
    pub reasoning: u64,
}

impl Usage {
    /// Every prompt token: what long-context thresholds are compared with.
    pub fn prompt_tokens(&self) -> u64 {
        self.input.saturating_add(self.cache_read).saturating_add(self.cache_write).saturating_add(self.cache_write_1h)
    }

    /// Every token, prompt and output.
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens().saturating_add(self.output)
    }

    /// From an OpenAI Chat Completions `usage` object (also the final chunk of a stream with
    /// `stream_options.include_usage`, and Azure OpenAI's).
    pub fn from_openai_chat<'de, D: serde::Deserializer<'de>>(usage: D) -> Result<Usage, D::Error> {
        let u = ChatUsage::deserialize(usage)?;
        let details = u.prompt_tokens_details.unwrap_or_default();
        Ok(openai(
            u.prompt_tokens,
            u.completion_tokens,
            details.cached_tokens.unwrap_or(0),
            details.cache_write_tokens.unwrap_or(0),
            u.completion_tokens_details.unwrap_or_default().reasoning_tokens.unwrap_or(0),
        ))
    }

    /// From an OpenAI Responses API `usage` object (`input_tokens`, `output_tokens`,
    /// `input_tokens_details.cached_tokens`, `output_tokens_details.reasoning_tokens`).
    pub fn from_openai_responses<'de, D: serde::Deserializer<'de>>(usage: D) -> Result<Usage, D::Error> {
        let u = ResponsesUsage::deserialize(usage)?;
        let details = u.input_tokens_details.unwrap_or_default();
        Ok(openai(
            u.input_tokens,
            u.output_tokens,
            details.cached_tokens.unwrap_or(0),
            details.cache_write_tokens.unwrap_or(0),
            u.output_tokens_details.unwrap_or_default().reasoning_tokens.unwrap_or(0),
        ))
    }

    /// From an OpenAI embeddings `usage` object (`prompt_tokens`, `total_tokens`).
    pub fn from_openai_embeddings<'de, D: serde::Deserializer<'de>>(usage: D) -> Result<Usage, D::Error> {
        let u = EmbeddingsUsage::deserialize(usage)?;
        Ok(Usage { input: u.prompt_tokens, ..Usage::default() })
    }

    /// From an Anthropic Messages `usage` object. For a stream, pass the usage of
    /// `message_start` merged with the cumulative `output_tokens` of the last `message_delta`.
    pub fn from_anthropic<'de, D: serde::Deserializer<'de>>(usage: D) -> Result<Usage, D::Error> {
        let u = AnthropicUsage::deserialize(usage)?;
        let creation = u.cache_creation_input_tokens.unwrap_or(0);
        let (write_5m, write_1h) = match u.cache_creation {
            // The split, when present, is authoritative; anything it does not account for is
            // billed as a 5-minute write.
            Some(split) => {
                let h1 = split.ephemeral_1h_input_tokens.unwrap_or(0);
                let m5 = split.ephemeral_5m_input_tokens.unwrap_or(0);
                (m5.max(creation.saturating_sub(h1)), h1)
            }
            None => (creation, 0),
        };
        Ok(Usage {
            input: u.input_tokens,
            output: u.output_tokens,
            cache_read: u.cache_read_input_tokens.unwrap_or(0),
            cache_write: write_5m,
            cache_write_1h: write_1h,
            reasoning: 0,
        })
    }
}

/// OpenAI semantics: cached and cache-write tokens are inside `prompt`.
fn openai(prompt: u64, output: u64, cached: u64, written: u64, reasoning: u64) -> Usage {
    // A misreport (cached > prompt) must not bill negative input; the cache buckets are
    // clamped to what the prompt holds.
    let cached = cached.min(prompt);
    let written = written.min(prompt - cached);
    Usage {
        input: prompt - cached - written,
        output,
        cache_read: cached,
        cache_write: written,
        cache_write_1h: 0,
        reasoning,
    }
}

#[derive(Deserialize)]
struct ChatUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<InputDetails>,
    #[serde(default)]
    completion_tokens_details: Option<OutputDetails>,
}

#[derive(Deserialize)]
struct ResponsesUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    input_tokens_details: Option<InputDetails>,
    #[serde(default)]
    output_tokens_details: Option<OutputDetails>,
}

#[derive(Default, Deserialize)]
struct InputDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    cache_write_tokens: Option<u64>,
}

#[derive(Default, Deserialize)]
struct OutputDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct EmbeddingsUsage {
    #[serde(default)]
    prompt_tokens: u64,
}

#[derive(Deserialize)]
struct AnthropicUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation: Option<CacheCreation>,
}

#[derive(Deserialize)]
struct CacheCreation {
    #[serde(default)]
    ephemeral_5m_input_tokens: Option<u64>,
    #[serde(default)]
    ephemeral_1h_input_tokens: Option<u64>,
}

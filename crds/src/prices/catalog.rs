//! The built-in price catalog: `crds/src/prices/catalog.yaml`, embedded at build time and parsed once.
//!
//! The file is the single place where list prices live. Each provider block records its
//! `source` (the pricing page) and `asOf` (the day the figures were checked); each entry is a
//! [`ModelPrice`], the same shape a Provider's `spec.prices` uses. Entries are trailing-`*`
//! prefixes and the longest matching prefix wins, so `gpt-4o-mini-2024-07-18` is priced as
//! `gpt-4o-mini*`, not `gpt-4o*`. Loading refuses a file with a bad price or with the same
//! pattern twice (case-insensitively), so a match is never ambiguous.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

use super::{PriceEntry, best_match, compile_price};
use crate::provider::ModelPrice;

/// The catalog file, as built into the binary.
pub const CATALOG_YAML: &str = include_str!("catalog.yaml");

/// Why a catalog could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// The YAML does not have the catalog's shape.
    #[error("the price catalog does not parse: {0}")]
    Parse(String),
    /// An entry has a bad pattern or price.
    #[error("the price catalog entry `{model}` is invalid: {}", problems.join("; "))]
    Invalid {
        /// The entry's pattern.
        model: String,
        /// What is wrong with it.
        problems: Vec<String>,
    },
    /// Two entries have the same pattern, so which one applies would be ambiguous.
    #[error("the price catalog has `{0}` more than once")]
    Duplicate(String),
}

/// One provider's block of the catalog.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CatalogProvider {
    /// `openai` or `anthropic`.
    pub provider: String,
    /// Where the figures come from.
    pub source: String,
    /// When they were checked (`YYYY-MM-DD`).
    pub as_of: String,
    /// Caveats, for people reading the file.
    #[serde(default)]
    pub notes: Option<String>,
    /// Its models.
    #[serde(default)]
    models: Vec<ModelPrice>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    providers: Vec<CatalogProvider>,
}

/// Prices by model-name prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalog {
    providers: Vec<CatalogProvider>,
    entries: Vec<PriceEntry>,
}

impl Catalog {
    /// The catalog built into this binary (`crds/src/prices/catalog.yaml`), parsed on first use. A test
    /// guarantees it loads; a caller may still check at startup and refuse to run without it.
    pub fn builtin() -> Result<&'static Catalog, &'static CatalogError> {
        static BUILTIN: OnceLock<Result<Catalog, CatalogError>> = OnceLock::new();
        BUILTIN.get_or_init(|| Catalog::parse(CATALOG_YAML)).as_ref()
    }

    /// Parses a catalog file.
    pub fn parse(yaml: &str) -> Result<Catalog, CatalogError> {
        let file: CatalogFile = serde_yaml::from_str(yaml).map_err(|e| CatalogError::Parse(e.to_string()))?;
        let mut seen = BTreeMap::new();
        let mut entries = Vec::new();
        for spec in file.providers.iter().flat_map(|p| &p.models) {
            let entry = compile_price(spec)
                .map_err(|problems| CatalogError::Invalid { model: spec.model.to_string(), problems })?;
            if seen.insert(entry.model.as_str().to_ascii_lowercase(), ()).is_some() {
                return Err(CatalogError::Duplicate(entry.model.to_string()));
            }
            entries.push(entry);
        }
        Ok(Catalog { providers: file.providers, entries })
    }

    /// The most specific entry matching `model` (exact, then longest prefix; ASCII case
    /// ignored).
    pub fn lookup(&self, model: &str) -> Option<&PriceEntry> {
        best_match(&self.entries, model)
    }

    /// Every entry, in file order.
    pub fn entries(&self) -> &[PriceEntry] {
        &self.entries
    }

    /// The provider blocks (with their `source` and `asOf`).
    pub fn providers(&self) -> &[CatalogProvider] {
        &self.providers
    }
}

impl CatalogProvider {
    /// The patterns of this provider's entries.
    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.models.iter().map(|m| m.model.as_str())
    }
}

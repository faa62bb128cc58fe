//! Secret values in memory: a string whose `Debug` and `Display` never show it.
//!
//! Provider keys and machine tokens pass through this type so that a stray `{:?}` in a log line
//! or a panic message cannot print them. It owns no crypto; sealing lives in the operator.

use std::fmt;

/// A secret string. Read it with [`SecretString::expose`], at the one place that needs it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The plaintext. Callers must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The last four characters, the most a person may be shown of a provider key.
    pub fn hint(&self) -> String {
        let chars: Vec<char> = self.0.chars().collect();
        let tail = chars.len().saturating_sub(4);
        format!("…{}", chars[tail..].iter().collect::<String>())
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_are_redacted() {
        let s = SecretString::new("sk-live-1234567890");
        assert!(!format!("{s:?}").contains("1234"));
        assert!(!format!("{s}").contains("1234"));
        assert_eq!(s.expose(), "sk-live-1234567890");
        assert_eq!(s.hint(), "…7890");
        assert_eq!(SecretString::new("ab").hint(), "…ab");
    }
}

//! [`Secret`]: a token that never shows up in logs or `{:?}` output.
//!
//! It has no `Display`, no `PartialEq` (compare with [`constant_time_eq`]) and prints as `***`
//! when debugged, so a config struct holding one may derive `Debug` safely. The value is read
//! only through [`Secret::expose`], which makes every use greppable.

use std::fmt;

#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself: to compare, or to put into an `authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_string())
    }
}

/// Compares secrets in time independent of where they differ (only the lengths leak).
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debug output never contains the value, also nested in a derived Debug.
    #[test]
    fn debug_is_redacted() {
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            token: Option<Secret>,
        }
        let text = format!(
            "{:?} {:#?}",
            Secret::new("hunter2-token"),
            Holder {
                token: Some("hunter2-token".into())
            }
        );
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("***"));
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq("abcdefgh", "abcdefgh"));
        assert!(!constant_time_eq("abcdefgh", "abcdefgi"));
        assert!(!constant_time_eq("abcdefgh", "abcdefg"));
        assert!(!constant_time_eq("", "a"));
        assert!(constant_time_eq("", ""));
    }
}

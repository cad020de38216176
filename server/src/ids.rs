//! Identifier newtypes that cannot be mixed up: jobs, workers, round tokens.

use std::fmt;

use rand::Rng;

macro_rules! id_type {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(JobId, "A job, e.g. `job-3`.");
id_type!(WorkerId, "A joined worker, e.g. `w-5`.");
id_type!(
    RoundToken,
    "Opaque per-round token: an update is credited only to the round that issued it."
);

/// 128 random bits as hex: round tokens and session tokens.
pub fn random_hex() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    hex::encode(bytes)
}

/// A name people read in lists and logs (a worker's, a job's): at most 128 bytes of visible
/// characters, so that what is displayed is what was sent. Printable ASCII, inner single
/// spaces, and letters and digits of any script are allowed; control and format characters
/// (bidi overrides, zero-width spaces), combining marks and other symbols are not.
pub fn check_display_name(name: &str, field: &str) -> Result<(), String> {
    if name.len() > 128 {
        return Err(format!(
            "{field} must be at most 128 bytes, got {}",
            name.len()
        ));
    }
    if name.starts_with(' ') || name.ends_with(' ') || name.contains("  ") {
        return Err(format!(
            "{field} {name:?} has leading, trailing or repeated spaces"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| !(c.is_ascii_graphic() || c == ' ' || (!c.is_ascii() && c.is_alphanumeric())))
    {
        return Err(format!(
            "{field} {:?} contains U+{:04X}, which is not a visible character (names may hold printable ASCII, single spaces, and letters and digits)",
            name.escape_default().to_string(),
            c as u32
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_display_name;

    #[test]
    fn names_must_display_as_sent() {
        for ok in ["hw-0", "rack 3/gpu_1", "Zürich-7", "東京-2", ""] {
            assert!(check_display_name(ok, "name").is_ok(), "{ok}");
        }
        for (bad, code) in [
            ("hw\u{200b}-0", "U+200B"),
            ("abc\u{202e}gpj.exe", "U+202E"),
            ("a\u{0301}", "U+0301"),
            ("tab\there", "U+0009"),
            ("\u{feff}w", "U+FEFF"),
            ("smile\u{1f600}", "U+1F600"),
        ] {
            let e = check_display_name(bad, "worker_name").unwrap_err();
            assert!(e.contains(code) && e.starts_with("worker_name"), "{e}");
        }
        assert!(check_display_name(" lead", "n").is_err());
        assert!(check_display_name("two  spaces", "n").is_err());
        assert!(check_display_name(&"x".repeat(129), "n").is_err());
    }
}

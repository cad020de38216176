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

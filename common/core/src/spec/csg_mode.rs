//! How a network's generated convolutions get their filters: full filters, a trained CSG, or a
//! seeded (never trained, never sent) CSG. Parsed from and printed as the CLI spelling.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::SpecError;

/// Seed of the seeded generator when the spelling does not name one.
pub const DEFAULT_GENERATOR_SEED: u64 = 0;

/// Slice width `S` and code size `C` of a Convolutional Slice Generator (DESIGN §1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CsgShape {
    pub slice: usize,
    pub code: usize,
}

/// How a generated layer's codes start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum CodeInit {
    /// N(0, 1), as the reference code: generated filters start far larger than He-initialised
    /// full filters (about 12x for a trained 12-72 generator, 36x for a seeded one).
    #[default]
    Unit,
    /// N(0, σ²) with σ chosen per layer so that the generated filters start at the He (fan-in)
    /// scale of full filters. Spelled with the suffix `/fanin`.
    FanIn,
}

/// The filter mode of a model.
///
/// Spelled `none`, `S-C` (e.g. `12-72`) or `seeded:S-C[:SEED]` (e.g. `seeded:12-72`), either
/// CSG form optionally followed by `/fanin` (see [`CodeInit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum CsgMode {
    /// Ordinary, trained full filters.
    #[default]
    Full,
    /// Generator and codes trained and exchanged.
    Trained { shape: CsgShape, codes: CodeInit },
    /// Generator derived from `seed` on every node; only codes are trained and exchanged.
    Seeded {
        shape: CsgShape,
        seed: u64,
        codes: CodeInit,
    },
}

impl CsgMode {
    /// A trained CSG with reference (unit) code initialisation.
    pub fn trained(slice: usize, code: usize) -> Self {
        CsgMode::Trained {
            shape: CsgShape { slice, code },
            codes: CodeInit::Unit,
        }
    }

    pub fn shape(&self) -> Option<CsgShape> {
        match self {
            CsgMode::Full => None,
            CsgMode::Trained { shape, .. } | CsgMode::Seeded { shape, .. } => Some(*shape),
        }
    }

    /// How the codes start (`Unit` for full filters, which have none).
    pub fn code_init(&self) -> CodeInit {
        match self {
            CsgMode::Full => CodeInit::Unit,
            CsgMode::Trained { codes, .. } | CsgMode::Seeded { codes, .. } => *codes,
        }
    }
}

impl fmt::Display for CsgMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CsgMode::Full => return write!(f, "none"),
            CsgMode::Trained { shape, .. } => write!(f, "{}-{}", shape.slice, shape.code)?,
            CsgMode::Seeded { shape, seed, .. } if *seed == DEFAULT_GENERATOR_SEED => {
                write!(f, "seeded:{}-{}", shape.slice, shape.code)?
            }
            CsgMode::Seeded { shape, seed, .. } => {
                write!(f, "seeded:{}-{}:{seed}", shape.slice, shape.code)?
            }
        }
        match self.code_init() {
            CodeInit::Unit => Ok(()),
            CodeInit::FanIn => write!(f, "/fanin"),
        }
    }
}

fn parse_shape(text: &str, whole: &str) -> Result<CsgShape, SpecError> {
    let bad = |why: &str| SpecError::BadCsgMode {
        text: whole.to_string(),
        why: why.to_string(),
    };
    let (s, c) = text
        .split_once('-')
        .ok_or_else(|| bad("expected S-C, e.g. 12-72"))?;
    let slice: usize = s
        .trim()
        .parse()
        .map_err(|_| bad("slice width S is not a positive integer"))?;
    let code: usize = c
        .trim()
        .parse()
        .map_err(|_| bad("code size C is not a positive integer"))?;
    if slice == 0 || code == 0 {
        return Err(bad("S and C must be at least 1"));
    }
    if slice > 256 || code > 4096 {
        return Err(bad("S must be at most 256 and C at most 4096"));
    }
    Ok(CsgShape { slice, code })
}

impl FromStr for CsgMode {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("none") || t.eq_ignore_ascii_case("full") {
            return Ok(CsgMode::Full);
        }
        let (t, codes) = match t.split_once('/') {
            None => (t, CodeInit::Unit),
            Some((mode, "fanin")) => (mode, CodeInit::FanIn),
            Some((_, other)) => {
                return Err(SpecError::BadCsgMode {
                    text: text.to_string(),
                    why: format!("unknown code initialisation {other:?} (known: fanin)"),
                });
            }
        };
        if let Some(rest) = t.strip_prefix("seeded:") {
            let (shape_text, seed) = match rest.split_once(':') {
                Some((shape, seed)) => {
                    let seed = seed.parse().map_err(|_| SpecError::BadCsgMode {
                        text: text.to_string(),
                        why: "seed after the second ':' is not an unsigned integer".into(),
                    })?;
                    (shape, seed)
                }
                None => (rest, DEFAULT_GENERATOR_SEED),
            };
            return Ok(CsgMode::Seeded {
                shape: parse_shape(shape_text, text)?,
                seed,
                codes,
            });
        }
        Ok(CsgMode::Trained {
            shape: parse_shape(t, text)?,
            codes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every spelling the CLI documents parses and prints back to itself.
    #[test]
    fn spellings_round_trip() {
        for s in [
            "none",
            "12-72",
            "16-128",
            "seeded:12-72",
            "seeded:12-72:7",
            "12-72/fanin",
            "seeded:12-72/fanin",
            "seeded:12-72:7/fanin",
        ] {
            let mode: CsgMode = s.parse().unwrap();
            assert_eq!(mode.to_string(), s);
        }
        assert_eq!("full".parse::<CsgMode>().unwrap(), CsgMode::Full);
        assert_eq!(
            "12-72".parse::<CsgMode>().unwrap(),
            CsgMode::trained(12, 72)
        );
        assert_eq!(
            "seeded:8-16/fanin".parse::<CsgMode>().unwrap().code_init(),
            CodeInit::FanIn
        );
    }

    /// Malformed spellings are refused with a message that says what is wrong.
    #[test]
    fn bad_spellings_are_explained() {
        for s in [
            "12",
            "a-72",
            "0-72",
            "seeded:12-72:x",
            "12-0",
            "12-72/big",
            "none/fanin",
        ] {
            let err = s.parse::<CsgMode>().unwrap_err().to_string();
            assert!(err.contains(s), "{err}");
        }
    }
}

//! Errors of the common library, one enum per concern, with named fields.

use thiserror::Error;

/// Errors building, loading, exchanging or training a model.
#[derive(Debug, Error)]
pub enum ModelError {
    #[error("invalid --csg value {text:?}: {why} (use none, S-C such as 12-72, or seeded:S-C)")]
    BadCsgMode { text: String, why: String },
    #[error(
        "invalid --model value {text:?}: {why} (use resnet20/32/44/56/110 or densenetDEPTHkGROWTH such as densenet40k36)"
    )]
    BadArchitecture { text: String, why: String },
    #[error("invalid model configuration: {why}")]
    BadConfig { why: String },
    #[error("tensor {name:?}: {why}")]
    BadTensor { name: String, why: String },
    #[error("model file {path}: {why}")]
    File { path: String, why: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

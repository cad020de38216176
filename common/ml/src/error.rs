//! Errors of the common library, one enum per concern, with named fields.

use thiserror::Error;

/// Errors building, loading, exchanging or training a model.
#[derive(Debug, Error)]
pub enum ModelError {
    #[error(transparent)]
    Spec(#[from] fedcsg_core::spec::SpecError),
    #[error("invalid model configuration: {why}")]
    BadConfig { why: String },
    #[error("tensor {name:?}: {why}")]
    BadTensor { name: String, why: String },
    #[error("model file {path}: {why}")]
    File { path: String, why: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

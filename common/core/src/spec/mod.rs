//! What a model is, as every node must agree on it: architecture, filter mode (full, trained or
//! seeded CSG), slice layout, input channels, classes, and the batch-norm statistics policy.
//! Plain data with CLI spellings; building and running the model is `fedcsg-ml`'s job.

mod bn_stats;
mod csg_mode;
mod model_spec;
mod slice_layout;

pub use bn_stats::BnStatsPolicy;
pub use csg_mode::{CodeInit, CsgMode, CsgShape, DEFAULT_GENERATOR_SEED};
pub use model_spec::{Architecture, ModelSpec};
pub use slice_layout::SliceLayout;

use thiserror::Error;

/// A model specification that cannot be parsed or is out of range.
#[derive(Debug, Error)]
pub enum SpecError {
    #[error("invalid --csg value {text:?}: {why} (use none, S-C such as 12-72, or seeded:S-C)")]
    BadCsgMode { text: String, why: String },
    #[error(
        "invalid --model value {text:?}: {why} (use resnet20/32/44/56/110 or densenetDEPTHkGROWTH such as densenet40k36)"
    )]
    BadArchitecture { text: String, why: String },
    #[error("invalid model configuration: {why}")]
    BadConfig { why: String },
}

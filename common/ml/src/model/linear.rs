//! The final fully connected classifier, initialised as in the reference ResNet code
//! (Kaiming-normal weight, PyTorch's default uniform bias).

use candle_core::Result;
use candle_nn::{Init, Linear, VarBuilder};

pub fn classifier(in_features: usize, classes: usize, vb: VarBuilder) -> Result<Linear> {
    let std = (2.0 / in_features as f64).sqrt();
    let weight = vb.get_with_hints(
        (classes, in_features),
        "weight",
        Init::Randn {
            mean: 0.0,
            stdev: std,
        },
    )?;
    let bound = 1.0 / (in_features as f64).sqrt();
    let bias = vb.get_with_hints(
        classes,
        "bias",
        Init::Uniform {
            lo: -bound,
            up: bound,
        },
    )?;
    Ok(Linear::new(weight, Some(bias)))
}

//! What a model is: its architecture, filter mode, input channels and classes. This is the part
//! of a job every node must agree on; with a seed it determines the initial weights exactly.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::SliceLayout;
use super::SpecError;
use super::csg_mode::CsgMode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Architecture {
    /// CIFAR ResNet with depth 6n+2.
    ResNet { depth: usize },
    /// DenseNet-BC with depth 6n+4 and growth rate k.
    DenseNet { depth: usize, growth: usize },
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Architecture::ResNet { depth } => write!(f, "resnet{depth}"),
            Architecture::DenseNet { depth, growth } => write!(f, "densenet{depth}k{growth}"),
        }
    }
}

impl FromStr for Architecture {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let t = text.trim().to_ascii_lowercase();
        let bad = |why: &str| SpecError::BadArchitecture {
            text: text.to_string(),
            why: why.to_string(),
        };
        if let Some(depth) = t.strip_prefix("resnet") {
            let depth: usize = depth
                .trim_start_matches('-')
                .parse()
                .map_err(|_| bad("depth is not a number"))?;
            if depth < 8 || !(depth - 2).is_multiple_of(6) {
                return Err(bad("ResNet depth must be 6n+2"));
            }
            return Ok(Architecture::ResNet { depth });
        }
        if let Some(rest) = t.strip_prefix("densenet") {
            let rest = rest.trim_start_matches("-bc").trim_start_matches('-');
            let (depth, growth) = match rest.split_once('k') {
                Some((d, k)) => (
                    d,
                    k.parse()
                        .map_err(|_| bad("growth rate after 'k' is not a number"))?,
                ),
                None => (rest, 12),
            };
            let depth: usize = depth.parse().map_err(|_| bad("depth is not a number"))?;
            if depth < 10 || !(depth - 4).is_multiple_of(6) {
                return Err(bad("DenseNet-BC depth must be 6n+4"));
            }
            if growth == 0 {
                return Err(bad("growth rate must be positive"));
            }
            return Ok(Architecture::DenseNet { depth, growth });
        }
        Err(bad("unknown architecture"))
    }
}

/// Everything that fixes a model's parameter set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModelSpec {
    pub arch: Architecture,
    pub csg: CsgMode,
    pub in_channels: usize,
    pub num_classes: usize,
    pub layout: SliceLayout,
}

impl ModelSpec {
    pub fn new(arch: Architecture, csg: CsgMode, in_channels: usize, num_classes: usize) -> Self {
        Self {
            arch,
            csg,
            in_channels,
            num_classes,
            layout: SliceLayout::default(),
        }
    }

    /// The same architecture with ordinary full filters: the baseline a CSG model is compared to.
    pub fn full_filter(&self) -> Self {
        Self {
            csg: CsgMode::Full,
            ..*self
        }
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        let bad = |why: String| Err(SpecError::BadConfig { why });
        if self.in_channels == 0 || self.in_channels > 64 {
            return bad(format!(
                "in_channels must be 1..=64, got {}",
                self.in_channels
            ));
        }
        if self.num_classes < 2 || self.num_classes > 10_000 {
            return bad(format!(
                "num_classes must be 2..=10000, got {}",
                self.num_classes
            ));
        }
        Ok(())
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} csg={} in={} classes={}",
            self.arch, self.csg, self.in_channels, self.num_classes
        )
    }
}

//! Whether batch-norm running statistics travel with the federation or stay on each worker.

use std::fmt;

use serde::Serialize;

/// Whether batch-norm running statistics are averaged by the federation or kept on each worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BnStatsPolicy {
    #[default]
    Averaged,
    Local,
}

impl std::str::FromStr for BnStatsPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "averaged" => Ok(Self::Averaged),
            "local" => Ok(Self::Local),
            other => Err(format!(
                "batch-norm statistics policy {other:?}: use averaged or local"
            )),
        }
    }
}

impl fmt::Display for BnStatsPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BnStatsPolicy::Averaged => "averaged",
            BnStatsPolicy::Local => "local",
        })
    }
}

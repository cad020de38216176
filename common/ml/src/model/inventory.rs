//! The parameter inventory of a model: every named tensor with its role, whether it is trained,
//! and whether it travels in a federated exchange. Counts follow DESIGN §1.3: weights plus
//! batch-norm affine parameters; batch-norm running statistics are listed but not counted.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::{BnStatsPolicy, CsgMode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ParamRole {
    Generator,
    Codes,
    Conv,
    Fc,
    BnAffine,
    BnStats,
}

impl fmt::Display for ParamRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParamRole::Generator => "generator",
            ParamRole::Codes => "codes",
            ParamRole::Conv => "conv",
            ParamRole::Fc => "fc",
            ParamRole::BnAffine => "bn-affine",
            ParamRole::BnStats => "bn-stats",
        })
    }
}

impl ParamRole {
    /// The role of a variable from its name, by the naming convention of our models: the
    /// generator is `generator.weight`, code banks end in `.codes`, the classifier is `fc.*`,
    /// batch-norm modules are named `bn*`, every other weight is an ordinary conv.
    pub fn of(name: &str) -> ParamRole {
        let (module, leaf) = name.rsplit_once('.').unwrap_or(("", name));
        let last_module = module.rsplit('.').next().unwrap_or(module);
        match leaf {
            "codes" => ParamRole::Codes,
            "running_mean" | "running_var" => ParamRole::BnStats,
            _ if module == "generator" => ParamRole::Generator,
            _ if module == "fc" => ParamRole::Fc,
            _ if last_module.starts_with("bn") => ParamRole::BnAffine,
            _ => ParamRole::Conv,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ParamEntry {
    pub name: String,
    pub shape: Vec<usize>,
    pub role: ParamRole,
    pub trained: bool,
    pub exchanged: bool,
}

impl ParamEntry {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    pub csg: CsgMode,
    pub entries: Vec<ParamEntry>,
}

impl Inventory {
    /// Builds the inventory from `(name, shape)` of every variable, plus the seeded generator's
    /// shape when the mode has one (it exists on every node but is neither trained nor sent).
    pub fn new(
        csg: CsgMode,
        vars: Vec<(String, Vec<usize>)>,
        seeded_generator: Option<Vec<usize>>,
        bn: BnStatsPolicy,
    ) -> Self {
        let mut entries: Vec<ParamEntry> = vars
            .into_iter()
            .map(|(name, shape)| {
                let role = ParamRole::of(&name);
                let trained = role != ParamRole::BnStats;
                let exchanged = role != ParamRole::BnStats || bn == BnStatsPolicy::Averaged;
                ParamEntry {
                    name,
                    shape,
                    role,
                    trained,
                    exchanged,
                }
            })
            .collect();
        if let Some(shape) = seeded_generator {
            entries.push(ParamEntry {
                name: "generator.weight".into(),
                shape,
                role: ParamRole::Generator,
                trained: false,
                exchanged: false,
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Self { csg, entries }
    }

    /// Parameters per role (every entry, trained or not).
    pub fn by_role(&self) -> BTreeMap<ParamRole, usize> {
        let mut out = BTreeMap::new();
        for e in &self.entries {
            *out.entry(e.role).or_default() += e.numel();
        }
        out
    }

    /// DESIGN §1.3's count: weights and BN affine parameters, including the generator.
    pub fn parameter_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.role != ParamRole::BnStats)
            .map(ParamEntry::numel)
            .sum()
    }

    pub fn trainable_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.trained)
            .map(ParamEntry::numel)
            .sum()
    }

    /// Parameters sent per exchange, not counting batch-norm running statistics.
    pub fn exchanged_parameter_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.exchanged && e.role != ParamRole::BnStats)
            .map(ParamEntry::numel)
            .sum()
    }

    /// Every value sent per exchange, batch-norm running statistics included.
    pub fn exchanged_value_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.exchanged)
            .map(ParamEntry::numel)
            .sum()
    }

    pub fn exchanged_names(&self) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|e| e.exchanged)
            .map(|e| e.name.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The naming convention maps every kind of variable our models create to its role.
    #[test]
    fn roles_follow_names() {
        assert_eq!(ParamRole::of("generator.weight"), ParamRole::Generator);
        assert_eq!(ParamRole::of("layer1.0.conv1.codes"), ParamRole::Codes);
        assert_eq!(ParamRole::of("layer1.0.conv1.weight"), ParamRole::Conv);
        assert_eq!(ParamRole::of("conv1.weight"), ParamRole::Conv);
        assert_eq!(ParamRole::of("layer1.0.bn2.weight"), ParamRole::BnAffine);
        assert_eq!(ParamRole::of("bn.bias"), ParamRole::BnAffine);
        assert_eq!(ParamRole::of("trans1.bn.running_var"), ParamRole::BnStats);
        assert_eq!(ParamRole::of("fc.bias"), ParamRole::Fc);
    }
}

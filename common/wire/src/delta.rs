//! Updates as deltas: a worker sends (trained value − the round's global model) rather than the
//! trained values, which compresses far better (a round moves weights a little) and makes the
//! error of a lossy download cancel out: the worker's delta is taken from the global model it
//! decoded, the coordinator adds it to the exact one.
//!
//! Batch-norm running statistics stay plain values in a delta update: they are overwritten by
//! moving averages rather than accumulated by gradient steps (so error feedback has nothing to
//! carry for them), and a plain variance stays non-negative through every encoding (f16, bf16
//! and int8 all map a non-negative value to a non-negative one), whereas
//! `global + quantised delta` can cross zero.

use fedcsg_core::tensor::{NamedTensor, StateDict};

/// What the tensors of an update are (the proto's `UpdateKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpdateKind {
    /// The trained values themselves.
    #[default]
    Weights,
    /// Differences from the round's global model, except [`stays_plain`] tensors.
    Delta,
}

/// Whether the tensor `name` travels as a plain value even in a delta update: batch-norm running
/// statistics (`*.running_mean`, `*.running_var`).
pub fn stays_plain(name: &str) -> bool {
    matches!(
        name.rsplit('.').next(),
        Some("running_mean" | "running_var")
    )
}

fn combine(
    a: &StateDict,
    b: &StateDict,
    op: impl Fn(f32, f32) -> f32,
    what: &str,
) -> Result<StateDict, String> {
    let tensors = a
        .tensors()
        .iter()
        .map(|t| {
            if stays_plain(&t.name) {
                return Ok(t.clone());
            }
            let g = b
                .get(&t.name)
                .ok_or_else(|| format!("{what}: the global model has no tensor {:?}", t.name))?;
            if g.shape != t.shape {
                return Err(format!(
                    "{what}: tensor {:?} has shape {:?}, the global model {:?}",
                    t.name, t.shape, g.shape
                ));
            }
            Ok(NamedTensor {
                name: t.name.clone(),
                shape: t.shape.clone(),
                values: t
                    .values
                    .iter()
                    .zip(&g.values)
                    .map(|(x, y)| op(*x, *y))
                    .collect(),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    StateDict::new(tensors)
}

/// The delta of `update` from `global`: `update − global` per tensor, plain statistics as they
/// are. Every tensor of `update` must be in `global` with the same shape.
pub fn delta_from(update: &StateDict, global: &StateDict) -> Result<StateDict, String> {
    combine(update, global, |u, g| u - g, "delta")
}

/// The trained values a delta stands for: `global + delta` per tensor, plain statistics as they
/// are. Every tensor of `delta` must be in `global` with the same shape.
pub fn apply_delta(global: &StateDict, delta: &StateDict) -> Result<StateDict, String> {
    combine(delta, global, |d, g| g + d, "applying a delta")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(tensors: &[(&str, Vec<f32>)]) -> StateDict {
        StateDict::new(
            tensors
                .iter()
                .map(|(n, v)| NamedTensor {
                    name: n.to_string(),
                    shape: vec![v.len()],
                    values: v.clone(),
                })
                .collect(),
        )
        .unwrap()
    }

    /// Trained tensors become differences and back; running statistics stay plain both ways.
    #[test]
    fn deltas_round_trip_and_statistics_stay_plain() {
        let global = state(&[
            ("conv.codes", vec![1.0, 2.0]),
            ("bn.running_var", vec![4.0]),
        ]);
        let update = state(&[
            ("conv.codes", vec![1.5, 1.0]),
            ("bn.running_var", vec![3.0]),
        ]);
        let d = delta_from(&update, &global).unwrap();
        assert_eq!(d.get("conv.codes").unwrap().values, vec![0.5, -1.0]);
        assert_eq!(d.get("bn.running_var").unwrap().values, vec![3.0]);
        assert_eq!(apply_delta(&global, &d).unwrap(), update);
        assert!(stays_plain("layer1.0.bn1.running_mean") && stays_plain("running_var"));
        assert!(!stays_plain("layer1.0.bn1.weight") && !stays_plain("fc.running_variance"));
    }

    /// A tensor the global model lacks, or has in another shape, is an error that names it.
    #[test]
    fn mismatched_tensors_are_named() {
        let global = state(&[("a", vec![1.0, 2.0])]);
        let e = delta_from(&state(&[("b", vec![1.0])]), &global).unwrap_err();
        assert!(e.contains("\"b\""), "{e}");
        let e = apply_delta(&global, &state(&[("a", vec![1.0])])).unwrap_err();
        assert!(e.contains("shape"), "{e}");
    }
}

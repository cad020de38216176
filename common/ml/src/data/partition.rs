//! `Partitioning`: splitting a training set across workers (IID, Dirichlet label skew, shards).
//!
//! Every scheme is a pure function of `(labels, num_classes, num_partitions, seed)`: each index
//! lands in exactly one partition, each partition is non-empty, and each is sorted ascending.

use std::fmt;
use std::str::FromStr;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Gamma};

use super::error::DataError;
use super::shuffle::derive_seed;

/// Shards per partition when `shards` is given without a number, as in McMahan et al. (2017).
pub const DEFAULT_SHARDS_PER_PARTITION: usize = 2;

/// Stream id so partitions are independent of epoch orders drawn from the same seed.
const PARTITION_STREAM: u64 = 0x5041_5254_4954_494f; // "PARTITIO"

/// How samples are dealt to workers. Spelled `iid`, `dirichlet:ALPHA`, `shards` or `shards:N`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Partitioning {
    /// Uniformly at random, partition sizes differing by at most one.
    #[default]
    Iid,
    /// Label skew: for each class, the share of each partition is drawn from a symmetric
    /// Dirichlet(alpha) (Hsu et al. 2019). Small alpha (0.1) gives each worker few classes;
    /// large alpha approaches IID.
    Dirichlet { alpha: f64 },
    /// Sort by label, cut into `num_partitions * per_partition` equal shards, deal each
    /// partition `per_partition` random shards: each worker sees about that many classes.
    Shards { per_partition: usize },
}

impl Partitioning {
    /// Splits the indices `0..labels.len()` into `num_partitions` non-empty, disjoint, sorted
    /// lists covering all of them.
    pub fn partition(
        &self,
        labels: &[u8],
        num_classes: usize,
        num_partitions: usize,
        seed: u64,
    ) -> Result<Vec<Vec<usize>>, DataError> {
        self.validate()?;
        if num_partitions == 0 {
            return Err(DataError::NoPartitions);
        }
        if num_partitions > labels.len() {
            return Err(DataError::TooManyPartitions {
                num_partitions,
                len: labels.len(),
            });
        }
        if let Some((index, &label)) = labels
            .iter()
            .enumerate()
            .find(|&(_, &l)| usize::from(l) >= num_classes)
        {
            let context = "labels to partition".to_owned();
            return Err(DataError::LabelOutOfRange {
                context,
                index,
                label,
                num_classes,
            });
        }
        let mut rng = StdRng::seed_from_u64(derive_seed(seed, PARTITION_STREAM));
        let mut parts = match *self {
            Partitioning::Iid => iid(labels.len(), num_partitions, &mut rng),
            Partitioning::Dirichlet { alpha } => {
                dirichlet(labels, num_classes, num_partitions, alpha, &mut rng)?
            }
            Partitioning::Shards { per_partition } => {
                shards(labels, num_partitions, per_partition, &mut rng)?
            }
        };
        for part in &mut parts {
            part.sort_unstable();
        }
        Ok(parts)
    }

    fn validate(&self) -> Result<(), DataError> {
        match *self {
            Partitioning::Dirichlet { alpha } if !(alpha.is_finite() && alpha > 0.0) => {
                Err(DataError::InvalidAlpha { alpha })
            }
            Partitioning::Shards { per_partition: 0 } => {
                Err(DataError::InvalidShardCount { per_partition: 0 })
            }
            _ => Ok(()),
        }
    }
}

fn iid(len: usize, num_partitions: usize, rng: &mut StdRng) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(rng);
    (0..num_partitions)
        .map(|k| order[k * len / num_partitions..(k + 1) * len / num_partitions].to_vec())
        .collect()
}

/// For each class, shuffle its samples and cut them at the cumulative Dirichlet shares. An empty
/// partition then takes one sample (the highest index) from the currently largest partition
/// (lowest partition number on ties), until none is empty: this moves at most `num_partitions`
/// samples, so the skew is kept, and needs no resampling loop whose length depends on luck.
fn dirichlet(
    labels: &[u8],
    num_classes: usize,
    num_partitions: usize,
    alpha: f64,
    rng: &mut StdRng,
) -> Result<Vec<Vec<usize>>, DataError> {
    let gamma = Gamma::new(alpha, 1.0).map_err(|_| DataError::InvalidAlpha { alpha })?;
    let mut by_class = vec![Vec::new(); num_classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[usize::from(l)].push(i);
    }
    let mut parts = vec![Vec::new(); num_partitions];
    for mut members in by_class.into_iter().filter(|m| !m.is_empty()) {
        members.shuffle(rng);
        let weights: Vec<f64> = (0..num_partitions).map(|_| gamma.sample(rng)).collect();
        let total: f64 = weights.iter().sum();
        let n = members.len();
        if !(total.is_finite() && total > 0.0) {
            // Tiny alpha can underflow every Gamma draw to 0: the limit is all mass on one.
            parts[rng.random_range(0..num_partitions)].extend(members);
            continue;
        }
        let (mut start, mut cumulative) = (0, 0.0);
        for (part, w) in parts.iter_mut().zip(&weights) {
            cumulative += w;
            let end = ((cumulative / total * n as f64).round() as usize).min(n);
            part.extend_from_slice(&members[start..end.max(start)]);
            start = end.max(start);
        }
        if let Some(last) = parts.last_mut() {
            last.extend_from_slice(&members[start..]);
        }
    }
    for part in &mut parts {
        part.sort_unstable();
    }
    while let Some(empty) = parts.iter().position(Vec::is_empty) {
        // With num_partitions <= len and one partition empty, the largest holds at least two.
        let donor = (0..num_partitions)
            .rev()
            .max_by_key(|&k| parts[k].len())
            .unwrap_or(0);
        if let Some(moved) = parts[donor].pop() {
            parts[empty].push(moved);
        }
    }
    Ok(parts)
}

fn shards(
    labels: &[u8],
    num_partitions: usize,
    per_partition: usize,
    rng: &mut StdRng,
) -> Result<Vec<Vec<usize>>, DataError> {
    let len = labels.len();
    let count = num_partitions.saturating_mul(per_partition);
    if count > len {
        return Err(DataError::TooManyShards {
            shards: count,
            num_partitions,
            per_partition,
            len,
        });
    }
    // Shuffle first so that within a class the stable sort leaves a random order.
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(rng);
    order.sort_by_key(|&i| labels[i]);
    let mut shard_ids: Vec<usize> = (0..count).collect();
    shard_ids.shuffle(rng);
    Ok(shard_ids
        .chunks_exact(per_partition)
        .map(|ids| {
            ids.iter()
                .flat_map(|&s| {
                    order[s * len / count..(s + 1) * len / count]
                        .iter()
                        .copied()
                })
                .collect()
        })
        .collect())
}

impl fmt::Display for Partitioning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Partitioning::Iid => f.write_str("iid"),
            Partitioning::Dirichlet { alpha } => write!(f, "dirichlet:{alpha}"),
            Partitioning::Shards { per_partition } => write!(f, "shards:{per_partition}"),
        }
    }
}

impl FromStr for Partitioning {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unknown = |reason: String| DataError::UnknownPartitioning {
            input: s.to_owned(),
            reason,
        };
        let (kind, arg) = match s.trim().split_once(':') {
            Some((kind, arg)) => (kind, Some(arg)),
            None => (s.trim(), None),
        };
        let parsed = match (kind, arg) {
            ("iid", None) => Partitioning::Iid,
            ("dirichlet", Some(a)) => Partitioning::Dirichlet {
                alpha: a
                    .parse()
                    .map_err(|_| unknown(format!("alpha {a:?} is not a number")))?,
            },
            ("dirichlet", None) => return Err(unknown("dirichlet needs an alpha".to_owned())),
            ("shards", None) => Partitioning::Shards {
                per_partition: DEFAULT_SHARDS_PER_PARTITION,
            },
            ("shards", Some(n)) => Partitioning::Shards {
                per_partition: n
                    .parse()
                    .map_err(|_| unknown(format!("{n:?} is not a shard count")))?,
            },
            ("iid", Some(_)) => return Err(unknown("iid takes no argument".to_owned())),
            _ => return Err(unknown("not a known scheme".to_owned())),
        };
        parsed.validate()?;
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SCHEMES: [Partitioning; 4] = [
        Partitioning::Iid,
        Partitioning::Dirichlet { alpha: 0.1 },
        Partitioning::Dirichlet { alpha: 100.0 },
        Partitioning::Shards { per_partition: 2 },
    ];

    /// 10 classes x 1,000 samples, interleaved.
    fn balanced_labels() -> Vec<u8> {
        (0..10_000).map(|i| (i % 10) as u8).collect()
    }

    /// Mean over partitions of the total-variation distance between the partition's label
    /// distribution and the uniform one: 0 for perfectly mixed partitions, up to 0.9 for one
    /// class per partition.
    fn label_skew(labels: &[u8], parts: &[Vec<usize>]) -> f64 {
        let tv = |part: &Vec<usize>| {
            let mut counts = [0usize; 10];
            part.iter()
                .for_each(|&i| counts[usize::from(labels[i])] += 1);
            counts
                .iter()
                .map(|&c| (c as f64 / part.len() as f64 - 0.1).abs())
                .sum::<f64>()
                / 2.0
        };
        parts.iter().map(tv).sum::<f64>() / parts.len() as f64
    }

    fn assert_disjoint_cover(parts: &[Vec<usize>], len: usize) {
        let mut seen = vec![false; len];
        for part in parts {
            assert!(!part.is_empty(), "empty partition");
            for &i in part {
                assert!(!std::mem::replace(&mut seen[i], true), "index {i} twice");
            }
        }
        assert!(seen.iter().all(|&s| s), "some index in no partition");
    }

    #[test]
    fn partitions_depend_only_on_seed() {
        // Proves that each scheme gives the same split for the same seed and another for another.
        let labels = balanced_labels();
        for scheme in SCHEMES {
            let a = scheme.partition(&labels, 10, 7, 1).unwrap();
            assert_eq!(a, scheme.partition(&labels, 10, 7, 1).unwrap(), "{scheme}");
            assert_ne!(a, scheme.partition(&labels, 10, 7, 2).unwrap(), "{scheme}");
        }
    }

    #[test]
    fn small_alpha_dirichlet_is_more_skewed_than_iid() {
        // Proves that Dirichlet(0.1) concentrates labels (skew > 0.5) while IID stays mixed
        // (skew < 0.05), with Dirichlet(100) in between and close to IID.
        let labels = balanced_labels();
        let skew = |p: Partitioning| label_skew(&labels, &p.partition(&labels, 10, 10, 3).unwrap());
        let (iid, low, high) = (
            skew(Partitioning::Iid),
            skew(Partitioning::Dirichlet { alpha: 0.1 }),
            skew(Partitioning::Dirichlet { alpha: 100.0 }),
        );
        assert!(
            iid < 0.05 && low > 0.5 && high < 0.1,
            "iid {iid}, alpha 0.1 {low}, alpha 100 {high}"
        );
    }

    #[test]
    fn two_shards_give_at_most_two_classes() {
        // Proves that with 20 shards of 500 over 10 classes of 1,000, each worker gets two
        // shards, hence at most two classes, and exactly 1,000 samples.
        let labels = balanced_labels();
        let parts = Partitioning::Shards { per_partition: 2 }
            .partition(&labels, 10, 10, 5)
            .unwrap();
        for part in &parts {
            let mut classes: Vec<u8> = part.iter().map(|&i| labels[i]).collect();
            classes.dedup_by_key(|c| *c);
            classes.sort_unstable();
            classes.dedup();
            assert!(
                classes.len() <= 2 && part.len() == 1000,
                "{classes:?}, {}",
                part.len()
            );
        }
    }

    #[test]
    fn dirichlet_tiny_alpha_still_fills_every_partition() {
        // Proves the rebalancing: alpha 1e-3 puts each class on one worker, yet 50 workers over
        // 3 classes all get a sample.
        let labels: Vec<u8> = (0..300).map(|i| (i % 3) as u8).collect();
        let parts = Partitioning::Dirichlet { alpha: 1e-3 }
            .partition(&labels, 3, 50, 0)
            .unwrap();
        assert_disjoint_cover(&parts, labels.len());
    }

    #[test]
    fn bad_arguments_are_rejected() {
        // Proves the clear errors for 0 or too many partitions, bad alpha and bad shard counts.
        let labels = balanced_labels();
        let iid = Partitioning::Iid;
        assert!(matches!(
            iid.partition(&labels, 10, 0, 0),
            Err(DataError::NoPartitions)
        ));
        assert!(matches!(
            iid.partition(&labels[..3], 10, 4, 0),
            Err(DataError::TooManyPartitions { .. })
        ));
        assert!(matches!(
            iid.partition(&labels, 5, 2, 0),
            Err(DataError::LabelOutOfRange { .. })
        ));
        for alpha in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = Partitioning::Dirichlet { alpha }.partition(&labels, 10, 2, 0);
            assert!(
                matches!(err, Err(DataError::InvalidAlpha { .. })),
                "{alpha}"
            );
        }
        let shards = Partitioning::Shards { per_partition: 3 };
        assert!(matches!(
            shards.partition(&labels[..5], 10, 2, 0),
            Err(DataError::TooManyShards { .. })
        ));
    }

    #[test]
    fn partitioning_spellings_round_trip() {
        // Proves the flag syntax: documented spellings parse, print back, and typos list the
        // valid ones.
        assert_eq!(
            "shards".parse::<Partitioning>().unwrap(),
            Partitioning::Shards { per_partition: 2 }
        );
        for s in ["iid", "dirichlet:0.5", "dirichlet:100", "shards:3"] {
            assert_eq!(s.parse::<Partitioning>().unwrap().to_string(), s);
        }
        for bad in ["iid:2", "dirichlet", "dirichlet:x", "shards:-1", "noniid"] {
            let err = bad.parse::<Partitioning>().unwrap_err().to_string();
            assert!(err.contains("valid: iid, dirichlet:ALPHA"), "{err}");
        }
        for bad in ["dirichlet:0", "dirichlet:NaN", "shards:0"] {
            assert!(bad.parse::<Partitioning>().is_err(), "{bad}");
        }
    }

    fn scheme() -> impl Strategy<Value = Partitioning> {
        prop_oneof![
            Just(Partitioning::Iid),
            (0.01f64..10.0).prop_map(|alpha| Partitioning::Dirichlet { alpha }),
            (1usize..4).prop_map(|per_partition| Partitioning::Shards { per_partition }),
        ]
    }

    proptest! {
        #[test]
        fn partitions_are_a_disjoint_cover(
            // Proves, for random labels, schemes, worker counts and seeds, that every index is
            // in exactly one partition, none is empty, and the split is reproducible.
            labels in proptest::collection::vec(0u8..10, 1..400),
            scheme in scheme(),
            frac in 0.0f64..1.0,
            seed in any::<u64>(),
        ) {
            let per = match scheme { Partitioning::Shards { per_partition } => per_partition, _ => 1 };
            let max_parts = (labels.len() / per).max(1);
            let parts_n = 1 + ((max_parts - 1) as f64 * frac) as usize;
            prop_assume!(parts_n * per <= labels.len());
            let parts = scheme.partition(&labels, 10, parts_n, seed).unwrap();
            prop_assert_eq!(parts.len(), parts_n);
            assert_disjoint_cover(&parts, labels.len());
            prop_assert_eq!(parts, scheme.partition(&labels, 10, parts_n, seed).unwrap());
        }
    }
}

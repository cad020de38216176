//! The seeds the coordinator derives from a job's seed: which workers a round samples, the
//! seed each sampled worker trains with, and the stochastic rounding of int8 downloads. Each draws from its own named stream through
//! [`derive_seed`], so no two of them (and no seed of the worker's own data pipeline) can
//! coincide the way `seed ^ round ^ ...` mixes do.

use fedcsg_core::seed::derive_seed;

use crate::ids::WorkerId;

/// The stream of the per-round choice of workers: "SAMPLING".
const ROUND_SAMPLING_STREAM: u64 = 0x5341_4d50_4c49_4e47;
/// The stream of the seeds workers train with: "LOCALTRN".
const LOCAL_TRAINING_STREAM: u64 = 0x4c4f_4341_4c54_524e;
/// The stream of the download encoding's stochastic rounding: "DOWNLOAD".
const DOWNLOAD_STREAM: u64 = 0x444f_574e_4c4f_4144;

/// Seeds the choice of the workers sampled into `round`; a retried round (`retries` so far in
/// the job) draws anew.
pub(super) fn round_sampling_seed(job_seed: u64, round: u64, retries: u64) -> u64 {
    let per_round = derive_seed(derive_seed(job_seed, ROUND_SAMPLING_STREAM), round);
    derive_seed(per_round, retries)
}

/// The seed `worker` trains with in `round`: different for every worker and round, the same
/// when the task is handed out again.
pub(super) fn local_training_seed(job_seed: u64, round: u64, worker: &WorkerId) -> u64 {
    let per_round = derive_seed(derive_seed(job_seed, LOCAL_TRAINING_STREAM), round);
    derive_seed(per_round, fnv(worker.as_str()))
}

/// Seeds the int8 rounding of the global model after `rounds_committed` rounds: one encoding per
/// version, the same bytes for every worker.
pub(super) fn download_rounding_seed(job_seed: u64, rounds_committed: u64) -> u64 {
    derive_seed(derive_seed(job_seed, DOWNLOAD_STREAM), rounds_committed)
}

/// FNV-1a, to turn a worker id into a stream id.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (round, worker) pair, every (round, retry) pair and every model version gets its
    /// own seed, the same one each time it is asked for, and the streams never share a seed.
    #[test]
    fn seeds_differ_per_round_worker_and_retry_and_repeat() {
        let (a, b) = (WorkerId::new("w-1"), WorkerId::new("w-2"));
        let mut training = std::collections::HashSet::new();
        let mut sampling = std::collections::HashSet::new();
        for round in 1..=50 {
            for w in [&a, &b] {
                assert!(training.insert(local_training_seed(7, round, w)));
            }
            for retries in 0..5 {
                assert!(sampling.insert(round_sampling_seed(7, round, retries)));
            }
        }
        assert!(training.is_disjoint(&sampling));
        let downloads: std::collections::HashSet<u64> =
            (0..50).map(|r| download_rounding_seed(7, r)).collect();
        assert_eq!(downloads.len(), 50);
        assert!(downloads.is_disjoint(&training) && downloads.is_disjoint(&sampling));
        assert_eq!(local_training_seed(7, 3, &a), local_training_seed(7, 3, &a));
        assert_ne!(local_training_seed(7, 3, &a), local_training_seed(8, 3, &a));
        assert_ne!(round_sampling_seed(7, 3, 0), round_sampling_seed(8, 3, 0));
    }

    /// FNV-1a reference values (from the FNV specification's test vectors).
    #[test]
    fn fnv_matches_the_reference() {
        assert_eq!(fnv(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv("a"), 0xaf63_dc4c_8601_ec8c);
    }
}

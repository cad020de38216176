//! This worker's share of the data: the training partition it trains on and the test partition
//! it evaluates on, both cut by the same scheme, count and seed every worker of a federation uses.

use fedcsg_ml::data::{Augmentation, DataSource, Dataset, Normalization, Partitioning};

use crate::config::WorkerConfig;
use crate::error::WorkerError;

/// The local partitions, with what the trainer needs to read them.
#[derive(Debug, Clone)]
pub struct LocalData {
    pub train: Dataset,
    pub test: Dataset,
    pub normalization: Normalization,
    pub augmentation: Augmentation,
    /// One line for the coordinator's worker list and the logs.
    pub description: String,
}

impl LocalData {
    /// Loads the data set and keeps partition `partition_id` of train and test (blocking I/O:
    /// call it off the async runtime).
    pub fn load(config: &WorkerConfig) -> Result<Self, WorkerError> {
        let data_err = |source| WorkerError::Data {
            data: config.data.to_string(),
            source,
        };
        let all = config.data.load().map_err(data_err)?;
        Self::from_sets(&config.data, all.train, all.test, config).map_err(data_err)
    }

    /// Every one of `num_partitions` workers' shares of `train` and `test`, cut exactly as
    /// `num_partitions` real workers with the same scheme and seed cut them (one pass over the
    /// labels instead of one per worker); used by simulations of many clients in one process.
    pub fn all_partitions(
        source: &DataSource,
        train: &Dataset,
        test: &Dataset,
        scheme: Partitioning,
        num_partitions: usize,
        seed: u64,
    ) -> Result<Vec<Self>, fedcsg_ml::data::DataError> {
        let train_parts = partition(train, scheme, num_partitions, seed)?;
        let test_parts = partition(test, scheme, num_partitions, seed)?;
        Ok(train_parts
            .iter()
            .zip(&test_parts)
            .enumerate()
            .map(|(id, (train_part, test_part))| {
                let (train, test) = (train.subset(train_part), test.subset(test_part));
                Self {
                    description: describe(source, scheme, num_partitions, id, seed, &train, &test),
                    train,
                    test,
                    normalization: source.normalization(),
                    augmentation: source.default_augmentation(),
                }
            })
            .collect())
    }

    fn from_sets(
        source: &DataSource,
        train: Dataset,
        test: Dataset,
        config: &WorkerConfig,
    ) -> Result<Self, fedcsg_ml::data::DataError> {
        let part = |set: &Dataset| -> Result<Dataset, fedcsg_ml::data::DataError> {
            let parts = partition(
                set,
                config.partitioning,
                config.num_partitions,
                config.partition_seed,
            )?;
            Ok(set.subset(&parts[config.partition_id]))
        };
        let (train, test) = (part(&train)?, part(&test)?);
        let description = describe(
            source,
            config.partitioning,
            config.num_partitions,
            config.partition_id,
            config.partition_seed,
            &train,
            &test,
        );
        Ok(Self {
            train,
            test,
            normalization: source.normalization(),
            augmentation: source.default_augmentation(),
            description,
        })
    }
}

fn describe(
    source: &DataSource,
    scheme: Partitioning,
    num_partitions: usize,
    id: usize,
    seed: u64,
    train: &Dataset,
    test: &Dataset,
) -> String {
    format!(
        "{source} partition {id}/{num_partitions} ({scheme}, seed {seed}): {} train, {} test",
        train.len(),
        test.len()
    )
}

fn partition(
    set: &Dataset,
    scheme: Partitioning,
    num_partitions: usize,
    seed: u64,
) -> Result<Vec<Vec<usize>>, fedcsg_ml::data::DataError> {
    scheme.partition(set.labels(), set.num_classes(), num_partitions, seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(partitioning: &str, n: usize, id: usize) -> WorkerConfig {
        let mut c = WorkerConfig::for_coordinator("http://127.0.0.1:1").unwrap();
        c.partitioning = partitioning.parse().unwrap();
        c.num_partitions = n;
        c.partition_id = id;
        c
    }

    /// Three workers with the same flags but different ids get disjoint partitions that cover
    /// the bundled training set, and each a share of the test set.
    #[test]
    fn workers_get_disjoint_shares_of_the_bundled_set() {
        let all = DataSource::Bundled.load().unwrap();
        let shares: Vec<LocalData> = (0..3)
            .map(|id| LocalData::load(&config("iid", 3, id)).unwrap())
            .collect();
        assert_eq!(
            shares.iter().map(|s| s.train.len()).sum::<usize>(),
            all.train.len()
        );
        assert_eq!(
            shares.iter().map(|s| s.test.len()).sum::<usize>(),
            all.test.len()
        );
        assert!(
            shares
                .iter()
                .all(|s| s.train.len().abs_diff(all.train.len() / 3) <= 1)
        );
        assert!(
            shares[1]
                .description
                .contains("partition 1/3 (iid, seed 0)"),
            "{}",
            shares[1].description
        );
        // Same flags, same share: a restarted worker trains on the same samples.
        assert_eq!(
            LocalData::load(&config("iid", 3, 1)).unwrap().train,
            shares[1].train
        );
        // One pass for every worker gives each worker what it loads alone.
        let every = LocalData::all_partitions(
            &DataSource::Bundled,
            &all.train,
            &all.test,
            "iid".parse().unwrap(),
            3,
            0,
        )
        .unwrap();
        for (one, alone) in every.iter().zip(&shares) {
            assert_eq!((&one.train, &one.test), (&alone.train, &alone.test));
            assert_eq!(one.description, alone.description);
        }
        // Label skew really skews: with shards:1 each worker sees few classes.
        let skewed = LocalData::load(&config("shards:1", 5, 0)).unwrap();
        assert!(
            skewed
                .train
                .label_counts()
                .iter()
                .filter(|c| **c > 0)
                .count()
                <= 3
        );
    }
}

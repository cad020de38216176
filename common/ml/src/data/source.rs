//! `DataSource`: the `--data` flag (which data set, from where) and loading its train/test pair.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::augment::Augmentation;
use super::dataset::Dataset;
use super::error::DataError;
use super::normalize::Normalization;
use super::{bundled, cifar, idx};

/// Where Debian's `dataset-fashion-mnist` package installs its files.
pub const FASHION_MNIST_SYSTEM_DIR: &str = "/usr/share/datasets/fashion-mnist";

const FASHION_MNIST_HINT: &str = "install it with `apt-get install dataset-fashion-mnist` (files \
    under /usr/share/datasets/fashion-mnist/), pass a directory holding the IDX files as \
    fashion-mnist:PATH, or use `bundled` for the built-in 6,000-image subset";
const MNIST_HINT: &str = "pass a directory holding train-images-idx3-ubyte, \
    train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each may end in \
    .gz), as published at http://yann.lecun.com/exdb/mnist/";

/// A data set and where to read it. Spelled `bundled` (the default), `fashion-mnist` (the
/// system copy), `fashion-mnist:PATH`, `mnist:PATH` or `cifar10:PATH`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DataSource {
    /// The Fashion-MNIST subset embedded in the library.
    #[default]
    Bundled,
    /// Fashion-MNIST from [`FASHION_MNIST_SYSTEM_DIR`].
    FashionMnistSystem,
    /// Fashion-MNIST IDX files in a directory.
    FashionMnist(PathBuf),
    /// MNIST IDX files in a directory.
    Mnist(PathBuf),
    /// CIFAR-10 binary batches in a directory.
    Cifar10(PathBuf),
}

/// A training set and the test set it is evaluated on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrainTest {
    pub train: Dataset,
    pub test: Dataset,
}

impl DataSource {
    /// Reads the train and test sets.
    pub fn load(&self) -> Result<TrainTest, DataError> {
        match self {
            DataSource::Bundled => bundled::load(),
            DataSource::FashionMnistSystem => load_idx_dir(
                Path::new(FASHION_MNIST_SYSTEM_DIR),
                "fashion-mnist",
                FASHION_MNIST_HINT,
            ),
            DataSource::FashionMnist(dir) => load_idx_dir(dir, "fashion-mnist", FASHION_MNIST_HINT),
            DataSource::Mnist(dir) => load_idx_dir(dir, "mnist", MNIST_HINT),
            DataSource::Cifar10(dir) => cifar::load_dir(dir),
        }
    }

    /// `(channels, height, width)` of the images, known without loading them.
    pub fn image_shape(&self) -> (usize, usize, usize) {
        match self {
            DataSource::Cifar10(_) => (cifar::CHANNELS, cifar::SIDE, cifar::SIDE),
            _ => (1, 28, 28),
        }
    }

    /// Number of classes, known without loading (10 for all of these sets).
    pub fn num_classes(&self) -> usize {
        10
    }

    /// The published per-channel statistics of this data set's full training set.
    pub fn normalization(&self) -> Normalization {
        match self {
            DataSource::Bundled | DataSource::FashionMnistSystem | DataSource::FashionMnist(_) => {
                Normalization::fashion_mnist()
            }
            DataSource::Mnist(_) => Normalization::mnist(),
            DataSource::Cifar10(_) => Normalization::cifar10(),
        }
    }

    /// The usual training augmentation: crop and flip for CIFAR-10, none for the grey sets
    /// (flipping digits or clothing is not label-preserving in general).
    pub fn default_augmentation(&self) -> Augmentation {
        match self {
            DataSource::Cifar10(_) => Augmentation::cifar(),
            _ => Augmentation::none(),
        }
    }
}

impl fmt::Display for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSource::Bundled => f.write_str("bundled"),
            DataSource::FashionMnistSystem => f.write_str("fashion-mnist"),
            DataSource::FashionMnist(p) => write!(f, "fashion-mnist:{}", p.display()),
            DataSource::Mnist(p) => write!(f, "mnist:{}", p.display()),
            DataSource::Cifar10(p) => write!(f, "cifar10:{}", p.display()),
        }
    }
}

impl FromStr for DataSource {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unknown = |reason: &str| DataError::UnknownSource {
            input: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (kind, path) = match s.trim().split_once(':') {
            Some((kind, "")) => {
                return Err(unknown(&format!("{kind}: needs a PATH")));
            }
            Some((kind, path)) => (kind, Some(PathBuf::from(path))),
            None => (s.trim(), None),
        };
        match (kind, path) {
            ("bundled", None) => Ok(DataSource::Bundled),
            ("fashion-mnist", None) => Ok(DataSource::FashionMnistSystem),
            ("fashion-mnist", Some(p)) => Ok(DataSource::FashionMnist(p)),
            ("mnist", Some(p)) => Ok(DataSource::Mnist(p)),
            ("cifar10", Some(p)) => Ok(DataSource::Cifar10(p)),
            ("mnist" | "cifar10", None) => {
                Err(unknown(&format!("{kind} needs a directory: {kind}:PATH")))
            }
            ("bundled", Some(_)) => Err(unknown("bundled takes no path")),
            _ => Err(unknown("not a known data set")),
        }
    }
}

/// Loads `train-*` and `t10k-*` IDX files (gzipped or not) from `dir`.
fn load_idx_dir(dir: &Path, name: &str, hint: &str) -> Result<TrainTest, DataError> {
    let find = |stem: &str| {
        idx::find_file(dir, stem).ok_or_else(|| DataError::NotInstalled {
            what: "IDX data set",
            path: dir.join(format!("{stem}[.gz]")),
            hint: hint.to_owned(),
        })
    };
    let split = |split: &str, prefix: &str| -> Result<Dataset, DataError> {
        let images = find(&format!("{prefix}-images-idx3-ubyte"))?;
        let labels = find(&format!("{prefix}-labels-idx1-ubyte"))?;
        idx::read_dataset(&format!("{name}/{split}"), &images, &labels, 10)
    };
    Ok(TrainTest {
        train: split("train", "train")?,
        test: split("test", "t10k")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_source_spellings_round_trip() {
        // Proves that every documented spelling parses and prints back the same.
        for s in [
            "bundled",
            "fashion-mnist",
            "fashion-mnist:/d/f",
            "mnist:rel/m",
            "cifar10:/c",
        ] {
            let parsed: DataSource = s.parse().unwrap();
            assert_eq!(parsed.to_string(), s);
        }
        assert_eq!(DataSource::default(), DataSource::Bundled);
    }

    #[test]
    fn unknown_data_source_lists_valid_spellings() {
        // Proves that a typo is refused with the list of valid spellings.
        for bad in ["fmnist", "mnist", "cifar10:", "bundled:/x", ""] {
            let err = bad.parse::<DataSource>().unwrap_err().to_string();
            assert!(
                err.contains("valid: bundled, fashion-mnist, fashion-mnist:PATH"),
                "{err}"
            );
        }
    }

    #[test]
    fn missing_fashion_mnist_dir_says_how_to_install() {
        // Proves that a directory without the IDX files yields the apt-get hint.
        let dir = std::env::temp_dir().join(format!("fedcsg-fmnist-{}-absent", std::process::id()));
        let err = DataSource::FashionMnist(dir)
            .load()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("apt-get install dataset-fashion-mnist"),
            "{err}"
        );
        assert!(err.contains("train-images-idx3-ubyte"), "{err}");
    }

    #[test]
    fn system_fashion_mnist_loads_full_set() {
        // Proves that the Debian package's files load as 60,000 + 10,000 images (CI installs it).
        if !Path::new(FASHION_MNIST_SYSTEM_DIR).is_dir() {
            println!(
                "skipped: {FASHION_MNIST_SYSTEM_DIR} absent (apt-get install dataset-fashion-mnist)"
            );
            return;
        }
        let data = DataSource::FashionMnistSystem.load().unwrap();
        assert_eq!((data.train.len(), data.test.len()), (60_000, 10_000));
        assert_eq!(data.train.label_counts(), vec![6000; 10]);
        assert_eq!(data.test.image_shape(), (1, 28, 28));
        system_fashion_mnist_matches_constants(&data.train);
    }

    /// Checks that the published constants are the statistics of the full training set.
    fn system_fashion_mnist_matches_constants(train: &Dataset) {
        let (own, known) = (
            Normalization::from_dataset(train),
            Normalization::fashion_mnist(),
        );
        println!("fashion-mnist train statistics: {own:?}");
        assert!((own.mean()[0] - known.mean()[0]).abs() < 1e-4, "{own:?}");
        assert!((own.std()[0] - known.std()[0]).abs() < 1e-4, "{own:?}");
    }
}

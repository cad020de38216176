//! The bundled Fashion-MNIST subset, embedded in the library so `--data bundled` needs no files.
//!
//! 6,000 training images (600 per class) and 1,000 test images (100 per class), real samples
//! from Fashion-MNIST drawn class-balanced by `scripts/make_bundled_subset.py` (fixed seed) from
//! the Debian package's files; gzipped IDX, about 3 MB in all.

use super::error::DataError;
use super::idx::dataset_from_bytes;
use super::source::TrainTest;

pub const NUM_CLASSES: usize = 10;
/// Samples per class in the bundled training and test sets.
pub const TRAIN_PER_CLASS: usize = 600;
pub const TEST_PER_CLASS: usize = 100;

macro_rules! bundled_file {
    ($name:literal) => {
        (
            include_bytes!(concat!("../../data/fashion-mnist-subset/", $name)).as_slice(),
            concat!("bundled:", $name),
        )
    };
}

/// Decodes the embedded subset (about 0.1 s: mostly gunzip).
pub fn load() -> Result<TrainTest, DataError> {
    Ok(TrainTest {
        train: dataset_from_bytes(
            "fashion-mnist-bundled/train",
            bundled_file!("train-images-idx3-ubyte.gz"),
            bundled_file!("train-labels-idx1-ubyte.gz"),
            NUM_CLASSES,
        )?,
        test: dataset_from_bytes(
            "fashion-mnist-bundled/test",
            bundled_file!("t10k-images-idx3-ubyte.gz"),
            bundled_file!("t10k-labels-idx1-ubyte.gz"),
            NUM_CLASSES,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_subset_is_class_balanced() {
        // Proves that the embedded files decode to 6,000 + 1,000 28x28 images, 600/100 per class.
        let data = load().unwrap();
        assert_eq!((data.train.len(), data.test.len()), (6000, 1000));
        assert_eq!(data.train.image_shape(), (1, 28, 28));
        assert_eq!(data.train.num_classes(), 10);
        assert_eq!(data.train.label_counts(), vec![TRAIN_PER_CLASS; 10]);
        assert_eq!(data.test.label_counts(), vec![TEST_PER_CLASS; 10]);
    }
}

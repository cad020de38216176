//! CIFAR-10 binary batches: `data_batch_1.bin` .. `data_batch_5.bin` and `test_batch.bin`.
//!
//! Each record is 1 label byte then 3,072 pixel bytes: the 1,024 red, then green, then blue
//! values of a 32x32 image, row-major. That is already CHW, so records are copied as they are.

use std::path::{Path, PathBuf};

use super::dataset::Dataset;
use super::error::DataError;
use super::idx::read_file;
use super::source::TrainTest;

pub const CHANNELS: usize = 3;
pub const SIDE: usize = 32;
pub const NUM_CLASSES: usize = 10;
const IMAGE_BYTES: usize = CHANNELS * SIDE * SIDE;
const RECORD_BYTES: usize = 1 + IMAGE_BYTES;

const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
const TEST_FILE: &str = "test_batch.bin";

/// How to get CIFAR-10 when it is missing (there is no Debian package for it).
pub const INSTALL_HINT: &str = "download the binary version (cifar-10-binary.tar.gz) from \
    https://www.cs.toronto.edu/~kriz/cifar.html, extract it, and pass the directory holding \
    data_batch_1.bin .. data_batch_5.bin and test_batch.bin (or its parent) as cifar10:PATH";

/// Appends the records of one batch file's bytes to `images` and `labels`; `file` names it in
/// errors.
pub fn decode_batch(
    bytes: &[u8],
    file: &str,
    images: &mut Vec<u8>,
    labels: &mut Vec<u8>,
) -> Result<(), DataError> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD_BYTES) {
        let expected = bytes.len().div_ceil(RECORD_BYTES).max(1) * RECORD_BYTES;
        return Err(DataError::Truncated {
            file: file.to_owned(),
            expected,
            got: bytes.len(),
        });
    }
    let first = labels.len();
    images.reserve(bytes.len() / RECORD_BYTES * IMAGE_BYTES);
    for (index, record) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        let label = record[0];
        if usize::from(label) >= NUM_CLASSES {
            labels.truncate(first);
            let context = file.to_owned();
            return Err(DataError::LabelOutOfRange {
                context,
                index,
                label,
                num_classes: NUM_CLASSES,
            });
        }
        labels.push(label);
        images.extend_from_slice(&record[1..]);
    }
    Ok(())
}

/// Loads the train (50,000) and test (10,000) sets from the directory of the binary batches, or
/// from its parent holding `cifar-10-batches-bin/` as the archive extracts.
pub fn load_dir(dir: &Path) -> Result<TrainTest, DataError> {
    let nested = dir.join("cifar-10-batches-bin");
    let dir = if dir.join(TEST_FILE).is_file() || !nested.is_dir() {
        dir
    } else {
        &nested
    };
    if !dir.join(TEST_FILE).is_file() {
        return Err(DataError::NotInstalled {
            what: "CIFAR-10 binary batches",
            path: dir.to_path_buf(),
            hint: INSTALL_HINT.to_owned(),
        });
    }
    let train: Vec<PathBuf> = TRAIN_FILES.iter().map(|f| dir.join(f)).collect();
    Ok(TrainTest {
        train: load_files("cifar10/train", &train)?,
        test: load_files("cifar10/test", &[dir.join(TEST_FILE)])?,
    })
}

fn load_files(name: &str, paths: &[PathBuf]) -> Result<Dataset, DataError> {
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    for path in paths {
        let bytes = read_file(path)?;
        decode_batch(
            &bytes,
            &path.display().to_string(),
            &mut images,
            &mut labels,
        )?;
    }
    Dataset::new(name, images, labels, (CHANNELS, SIDE, SIDE), NUM_CLASSES)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(label: u8, fill: u8) -> Vec<u8> {
        let mut r = vec![label];
        r.extend(std::iter::repeat_n(fill, IMAGE_BYTES));
        r
    }

    #[test]
    fn cifar_records_decode_to_chw_images() {
        // Proves that each 3,073-byte record becomes one label and one 3x32x32 image.
        let bytes = [record(3, 7), record(9, 1)].concat();
        let (mut images, mut labels) = (Vec::new(), Vec::new());
        decode_batch(&bytes, "b.bin", &mut images, &mut labels).unwrap();
        assert_eq!(labels, vec![3, 9]);
        assert_eq!(images.len(), 2 * IMAGE_BYTES);
        assert_eq!((images[0], images[IMAGE_BYTES]), (7, 1));
    }

    #[test]
    fn cifar_truncated_and_bad_label_are_reported() {
        // Proves that a partial record and a label >= 10 are errors naming the file.
        let (mut images, mut labels) = (Vec::new(), Vec::new());
        let bytes = [record(1, 0), record(2, 0)].concat();
        let err = decode_batch(&bytes[..5000], "cut.bin", &mut images, &mut labels).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cut.bin: truncated: expected 6146 bytes, got 5000"
        );
        let err = decode_batch(&record(10, 0), "lab.bin", &mut images, &mut labels).unwrap_err();
        assert!(
            err.to_string().starts_with("lab.bin: label 10 at record 0"),
            "{err}"
        );
    }

    #[test]
    fn cifar_missing_dir_says_how_to_install() {
        // Proves that pointing at a directory without batches explains where to get them.
        let dir = std::env::temp_dir().join(format!("fedcsg-cifar-{}-absent", std::process::id()));
        let err = load_dir(&dir).unwrap_err();
        assert!(err.to_string().contains("cifar-10-binary.tar.gz"), "{err}");
    }
}

//! IDX files (MNIST, Fashion-MNIST): readers from a path or from bytes, gzipped or plain.
//!
//! Format: a big-endian header `00 00 08 NDIMS` (0x08 = unsigned bytes), NDIMS big-endian u32
//! sizes, then the data. Images are 3-D (count, rows, cols), labels 1-D (count). Gzip is detected
//! by its magic bytes `1f 8b`, not by the file name, so renamed files still load.

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::dataset::Dataset;
use super::error::DataError;

/// Magic of an IDX file of unsigned bytes with three dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic of an IDX file of unsigned bytes with one dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Decoded IDX images: `count x rows x cols` grey pixels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

/// Reads a whole file, naming it in the error.
pub fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Returns the bytes themselves, or their decompression when they start with gzip's magic.
pub fn maybe_gunzip<'a>(
    bytes: &'a [u8],
    file: &str,
) -> Result<std::borrow::Cow<'a, [u8]>, DataError> {
    if !bytes.starts_with(&GZIP_MAGIC) {
        return Ok(bytes.into());
    }
    let mut out = Vec::new();
    MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(|source| DataError::Gzip {
            file: file.to_owned(),
            source,
        })?;
    Ok(out.into())
}

/// Decodes an IDX image file (gzipped or plain); `file` names it in errors.
pub fn decode_images(bytes: &[u8], file: &str) -> Result<IdxImages, DataError> {
    let bytes = maybe_gunzip(bytes, file)?;
    let (dims, body) = split_header(
        &bytes,
        file,
        IMAGES_MAGIC,
        "IDX images: unsigned bytes, 3 dims",
    )?;
    let (count, rows, cols) = (dims[0], dims[1], dims[2]);
    if rows == 0 || cols == 0 {
        let detail = format!("images of {rows}x{cols} pixels");
        return Err(DataError::BadShape {
            file: file.to_owned(),
            detail,
        });
    }
    let size = count
        .checked_mul(rows)
        .and_then(|n| n.checked_mul(cols))
        .ok_or_else(|| {
            let detail = format!("{count} images of {rows}x{cols} overflow memory sizes");
            DataError::BadShape {
                file: file.to_owned(),
                detail,
            }
        })?;
    check_body_len(body, size, 16, file)?;
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels: body.to_vec(),
    })
}

/// Decodes an IDX label file (gzipped or plain); `file` names it in errors.
pub fn decode_labels(bytes: &[u8], file: &str) -> Result<Vec<u8>, DataError> {
    let bytes = maybe_gunzip(bytes, file)?;
    let (dims, body) = split_header(
        &bytes,
        file,
        LABELS_MAGIC,
        "IDX labels: unsigned bytes, 1 dim",
    )?;
    check_body_len(body, dims[0], 8, file)?;
    Ok(body.to_vec())
}

/// Encodes images as a plain (not gzipped) IDX file.
///
/// # Panics
/// If `pixels.len() != count * rows * cols` or a size does not fit the format's u32.
pub fn encode_images(images: &IdxImages) -> Vec<u8> {
    assert_eq!(
        images.pixels.len(),
        images.count * images.rows * images.cols,
        "IDX image size"
    );
    let mut out = Vec::with_capacity(16 + images.pixels.len());
    out.extend_from_slice(&IMAGES_MAGIC.to_be_bytes());
    for dim in [images.count, images.rows, images.cols] {
        out.extend_from_slice(&u32_dim(dim).to_be_bytes());
    }
    out.extend_from_slice(&images.pixels);
    out
}

/// Encodes labels as a plain (not gzipped) IDX file.
///
/// # Panics
/// If there are more than `u32::MAX` labels.
pub fn encode_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + labels.len());
    out.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
    out.extend_from_slice(&u32_dim(labels.len()).to_be_bytes());
    out.extend_from_slice(labels);
    out
}

/// Builds a single-channel data set from an image file's and a label file's bytes; the names
/// are used in errors.
pub fn dataset_from_bytes(
    name: &str,
    (images, images_file): (&[u8], &str),
    (labels, labels_file): (&[u8], &str),
    num_classes: usize,
) -> Result<Dataset, DataError> {
    let images = decode_images(images, images_file)?;
    let labels = decode_labels(labels, labels_file)?;
    if images.count != labels.len() {
        return Err(DataError::CountMismatch {
            images: images_file.to_owned(),
            num_images: images.count,
            labels: labels_file.to_owned(),
            num_labels: labels.len(),
        });
    }
    // Check here, not only in Dataset::new, so the error names the label file.
    if let Some((index, &label)) = labels
        .iter()
        .enumerate()
        .find(|&(_, &l)| usize::from(l) >= num_classes)
    {
        let context = labels_file.to_owned();
        return Err(DataError::LabelOutOfRange {
            context,
            index,
            label,
            num_classes,
        });
    }
    Dataset::new(
        name,
        images.pixels,
        labels,
        (1, images.rows, images.cols),
        num_classes,
    )
}

/// Reads an image file and a label file into a single-channel data set.
pub fn read_dataset(
    name: &str,
    images_path: &Path,
    labels_path: &Path,
    num_classes: usize,
) -> Result<Dataset, DataError> {
    let images = read_file(images_path)?;
    let labels = read_file(labels_path)?;
    dataset_from_bytes(
        name,
        (&images, &images_path.display().to_string()),
        (&labels, &labels_path.display().to_string()),
        num_classes,
    )
}

/// Finds `dir/STEM.gz` or, failing that, `dir/STEM` (e.g. `train-images-idx3-ubyte`).
pub fn find_file(dir: &Path, stem: &str) -> Option<PathBuf> {
    [dir.join(format!("{stem}.gz")), dir.join(stem)]
        .into_iter()
        .find(|p| p.is_file())
}

/// Checks the magic and reads the dimensions (their number is the magic's last byte).
fn split_header<'a>(
    bytes: &'a [u8],
    file: &str,
    expected_magic: u32,
    format: &'static str,
) -> Result<(Vec<usize>, &'a [u8]), DataError> {
    let ndims = (expected_magic & 0xff) as usize;
    let header_len = 4 + 4 * ndims;
    let Some(magic) = bytes.first_chunk::<4>().map(|m| u32::from_be_bytes(*m)) else {
        return Err(truncated(file, header_len, bytes.len()));
    };
    if magic != expected_magic {
        let file = file.to_owned();
        return Err(DataError::BadMagic {
            file,
            found: magic,
            expected: expected_magic,
            format,
        });
    }
    if bytes.len() < header_len {
        return Err(truncated(file, header_len, bytes.len()));
    }
    let dims = bytes[4..header_len]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    Ok((dims, &bytes[header_len..]))
}

fn check_body_len(
    body: &[u8],
    expected: usize,
    header_len: usize,
    file: &str,
) -> Result<(), DataError> {
    if body.len() < expected {
        return Err(truncated(
            file,
            header_len + expected,
            header_len + body.len(),
        ));
    }
    if body.len() > expected {
        let file = file.to_owned();
        let (expected, extra) = (header_len + expected, body.len() - expected);
        return Err(DataError::TrailingBytes {
            file,
            expected,
            extra,
        });
    }
    Ok(())
}

fn truncated(file: &str, expected: usize, got: usize) -> DataError {
    DataError::Truncated {
        file: file.to_owned(),
        expected,
        got,
    }
}

fn u32_dim(n: usize) -> u32 {
    u32::try_from(n).unwrap_or_else(|_| panic!("IDX dimension {n} does not fit in u32"))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    fn sample() -> (IdxImages, Vec<u8>) {
        let pixels: Vec<u8> = (0..3 * 4 * 5).map(|i| (i * 7 % 256) as u8).collect();
        (
            IdxImages {
                count: 3,
                rows: 4,
                cols: 5,
                pixels,
            },
            vec![2, 0, 9],
        )
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    /// A file under the temp dir whose name is unique to this process and test.
    fn temp_file(tag: &str, bytes: &[u8]) -> PathBuf {
        let path = std::env::temp_dir().join(format!("fedcsg-idx-{}-{tag}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn idx_round_trip_plain_and_gzipped() {
        // Proves that encode/decode are inverse, and that gzip is detected from the bytes.
        let (images, labels) = sample();
        for gz in [false, true] {
            let (mut img, mut lab) = (encode_images(&images), encode_labels(&labels));
            if gz {
                (img, lab) = (gzip(&img), gzip(&lab));
            }
            assert_eq!(decode_images(&img, "img").unwrap(), images);
            assert_eq!(decode_labels(&lab, "lab").unwrap(), labels);
            let ds = dataset_from_bytes("t", (&img, "img"), (&lab, "lab"), 10).unwrap();
            assert_eq!((ds.len(), ds.image_shape()), (3, (1, 4, 5)));
            assert_eq!(ds.images(), &images.pixels[..]);
        }
    }

    #[test]
    fn idx_files_round_trip_from_disk() {
        // Proves that read_dataset loads a gzipped image file next to a plain label file.
        let (images, labels) = sample();
        let img = temp_file("rt-images.gz", &gzip(&encode_images(&images)));
        let lab = temp_file("rt-labels", &encode_labels(&labels));
        let ds = read_dataset("t", &img, &lab, 10);
        let _ = (std::fs::remove_file(&img), std::fs::remove_file(&lab));
        assert_eq!(ds.unwrap().labels(), &labels[..]);
    }

    #[test]
    fn truncated_file_names_file_and_sizes() {
        // Proves that a short image file is reported with its path and expected/actual sizes.
        let (images, labels) = sample();
        let mut bytes = encode_images(&images);
        bytes.truncate(bytes.len() - 10);
        let img = temp_file("trunc-images", &bytes);
        let lab = temp_file("trunc-labels", &encode_labels(&labels));
        let err = read_dataset("t", &img, &lab, 10).unwrap_err();
        let _ = (std::fs::remove_file(&img), std::fs::remove_file(&lab));
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                DataError::Truncated {
                    expected: 76,
                    got: 66,
                    ..
                }
            ),
            "{msg}"
        );
        assert!(
            msg.contains(&img.display().to_string()) && msg.contains("truncated"),
            "{msg}"
        );
        assert!(msg.contains("expected 76 bytes, got 66"), "{msg}");
    }

    #[test]
    fn bad_magic_names_file_and_magic() {
        // Proves that a label file passed as images is refused, naming the file and both magics.
        let (_, labels) = sample();
        let lab = temp_file("magic-labels.gz", &gzip(&encode_labels(&labels)));
        let err = read_dataset("t", &lab, &lab, 10).unwrap_err();
        let _ = std::fs::remove_file(&lab);
        let msg = err.to_string();
        assert!(matches!(
            err,
            DataError::BadMagic {
                found: LABELS_MAGIC,
                expected: IMAGES_MAGIC,
                ..
            }
        ));
        assert!(
            msg.contains(&lab.display().to_string()) && msg.contains("bad magic"),
            "{msg}"
        );
    }

    #[test]
    fn corrupt_gzip_is_reported() {
        // Proves that a cut-off gzip stream is an error naming the file, not a silent short read.
        let (images, _) = sample();
        let gz = gzip(&encode_images(&images));
        let err = decode_images(&gz[..gz.len() / 2], "half.gz").unwrap_err();
        assert!(
            matches!(err, DataError::Gzip { ref file, .. } if file == "half.gz"),
            "{err}"
        );
    }

    #[test]
    fn count_mismatch_and_label_range_are_reported() {
        // Proves that images and labels must agree in count and labels must be < num_classes.
        let (images, labels) = sample();
        let img = encode_images(&images);
        let err = dataset_from_bytes("t", (&img, "i"), (&encode_labels(&labels[..2]), "l"), 10);
        assert!(matches!(
            err,
            Err(DataError::CountMismatch {
                num_images: 3,
                num_labels: 2,
                ..
            })
        ));
        let err = dataset_from_bytes("t", (&img, "i"), (&encode_labels(&labels), "l"), 5);
        assert!(matches!(
            err,
            Err(DataError::LabelOutOfRange {
                index: 2,
                label: 9,
                ..
            })
        ));
    }

    #[test]
    fn missing_file_names_path() {
        // Proves that an absent file is an Io error carrying its path.
        let path = std::env::temp_dir().join(format!("fedcsg-idx-{}-absent", std::process::id()));
        let err = read_file(&path).unwrap_err();
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
}

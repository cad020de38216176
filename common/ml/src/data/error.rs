//! `DataError`: everything that can go wrong reading, validating or splitting a data set.
//!
//! Errors about a file name that file (`file` is a path, or `bundled:NAME` for embedded data) and
//! say what is wrong with it, so an operator can act on the message alone.

use std::path::PathBuf;

/// Errors of the data layer.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be opened or read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A whole data set is absent; `hint` says how to install it.
    #[error("{what} not found at {}: {hint}", path.display())]
    NotInstalled {
        what: &'static str,
        path: PathBuf,
        hint: String,
    },

    /// The file starts with gzip's magic but does not decompress.
    #[error("{file}: corrupt gzip stream: {source}")]
    Gzip {
        file: String,
        #[source]
        source: std::io::Error,
    },

    /// The file does not start with the magic number of the expected format.
    #[error("{file}: bad magic {found:#010x}, expected {expected:#010x} ({format})")]
    BadMagic {
        file: String,
        found: u32,
        expected: u32,
        format: &'static str,
    },

    /// The file is shorter than its header (or record size) promises.
    #[error("{file}: truncated: expected {expected} bytes, got {got}")]
    Truncated {
        file: String,
        expected: usize,
        got: usize,
    },

    /// The file is longer than its header promises; a sign of a mismatched or corrupt file.
    #[error("{file}: {extra} trailing bytes after the {expected} bytes the header describes")]
    TrailingBytes {
        file: String,
        expected: usize,
        extra: usize,
    },

    /// The header describes a shape this loader cannot hold (zero or overflowing sizes).
    #[error("{file}: unsupported shape: {detail}")]
    BadShape { file: String, detail: String },

    /// A label is not below the number of classes.
    #[error("{context}: label {label} at record {index} is out of range for {num_classes} classes")]
    LabelOutOfRange {
        context: String,
        index: usize,
        label: u8,
        num_classes: usize,
    },

    /// The image file and the label file disagree on how many samples there are.
    #[error("{images} holds {num_images} images but {labels} holds {num_labels} labels")]
    CountMismatch {
        images: String,
        num_images: usize,
        labels: String,
        num_labels: usize,
    },

    /// A data set was built from pixel and label buffers whose sizes disagree.
    #[error(
        "data set {dataset}: {num_labels} labels of {channels}x{height}x{width} need {expected} \
         image bytes, got {got}"
    )]
    SizeMismatch {
        dataset: String,
        num_labels: usize,
        channels: usize,
        height: usize,
        width: usize,
        expected: usize,
        got: usize,
    },

    /// An index handed to the batch filler is past the end of the data set.
    #[error("data set {dataset}: index {index} is out of range for {len} samples")]
    IndexOutOfRange {
        dataset: String,
        index: usize,
        len: usize,
    },

    /// The normalisation has a different number of channels than the images.
    #[error(
        "normalisation has {normalization} channels but data set {dataset} has {dataset_channels}"
    )]
    ChannelMismatch {
        dataset: String,
        dataset_channels: usize,
        normalization: usize,
    },

    /// Mean and std vectors of a normalisation are unusable.
    #[error("invalid normalisation: {detail}")]
    InvalidNormalization { detail: String },

    /// Partitioning asked for zero partitions.
    #[error("cannot split into 0 partitions")]
    NoPartitions,

    /// More partitions than samples: some partition would be empty.
    #[error("cannot split {len} samples into {num_partitions} non-empty partitions")]
    TooManyPartitions { num_partitions: usize, len: usize },

    /// Dirichlet concentration must be a finite positive number.
    #[error("dirichlet alpha must be finite and > 0, got {alpha}")]
    InvalidAlpha { alpha: f64 },

    /// Shard partitioning needs at least one shard per partition.
    #[error("shards per partition must be at least 1, got {per_partition}")]
    InvalidShardCount { per_partition: usize },

    /// More shards than samples.
    #[error(
        "cannot cut {len} samples into {shards} non-empty shards ({num_partitions} partitions x {per_partition} shards)"
    )]
    TooManyShards {
        shards: usize,
        num_partitions: usize,
        per_partition: usize,
        len: usize,
    },

    /// A `--partitioning` spelling that is not recognised.
    #[error(
        "unknown partitioning {input:?}: {reason}; valid: iid, dirichlet:ALPHA (e.g. dirichlet:0.5), shards (2 per partition), shards:N"
    )]
    UnknownPartitioning { input: String, reason: String },

    /// A `--data` spelling that is not recognised.
    #[error(
        "unknown data source {input:?}: {reason}; valid: bundled, fashion-mnist, fashion-mnist:PATH, mnist:PATH, cifar10:PATH"
    )]
    UnknownSource { input: String, reason: String },
}

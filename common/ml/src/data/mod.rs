//! The data layer: data sets, their loaders, partitioning across workers, and batches.
//!
//! Candle-free on purpose: images stay `u8` until [`fill_batch`] turns a batch into NCHW `f32`,
//! which the trainer wraps in a tensor.
//!
//! - [`error`]: [`DataError`], naming the file and the problem.
//! - [`dataset`]: [`Dataset`], labelled CHW images with validated sizes.
//! - [`idx`]: IDX readers and writers (MNIST, Fashion-MNIST), gzipped or plain.
//! - [`cifar`]: CIFAR-10 binary batch reader.
//! - [`bundled`]: the 6,000 + 1,000 image Fashion-MNIST subset embedded in the library.
//! - [`source`]: [`DataSource`], the `--data` flag, and loading a train/test pair.
//! - [`normalize`]: per-channel mean/std normalisation.
//! - [`augment`]: random crop with padding and horizontal flip.
//! - [`batch`]: [`fill_batch`], from indices to normalised (and augmented) `f32` batches.
//! - [`shuffle`]: seeded epoch orders.
//! - [`partition`]: [`Partitioning`], IID / Dirichlet / shard splits across workers.

pub mod augment;
pub mod batch;
pub mod bundled;
pub mod cifar;
pub mod dataset;
pub mod error;
pub mod idx;
pub mod normalize;
pub mod partition;
pub mod shuffle;
pub mod source;

pub use augment::Augmentation;
pub use batch::fill_batch;
pub use dataset::Dataset;
pub use error::DataError;
pub use normalize::Normalization;
pub use partition::Partitioning;
pub use shuffle::epoch_order;
pub use source::{DataSource, TrainTest};

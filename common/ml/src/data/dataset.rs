//! `Dataset`: a labelled image set held as raw bytes, validated once on construction.

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::error::DataError;
use super::shuffle::derive_seed;

/// Stream id for `seeded_subset`, so its draw is independent of epoch orders and partitions made
/// from the same seed.
const SUBSET_STREAM: u64 = 0x5355_4253_4554; // "SUBSET"
/// Stream id of validation splits.
const SPLIT_STREAM: u64 = 0x5350_4c49_5400_0000; // "SPLIT"

/// Images as `u8` pixels, N x C x H x W (each image CHW, like CIFAR-10's files and candle's
/// tensors), with one label per image.
///
/// Fields are private so the invariants checked by [`Dataset::new`] (sizes agree, every label is
/// below `num_classes`) hold for every value of the type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    name: String,
    images: Vec<u8>,
    labels: Vec<u8>,
    channels: usize,
    height: usize,
    width: usize,
    num_classes: usize,
}

impl Dataset {
    /// Builds a data set from CHW images and labels; `shape` is `(channels, height, width)`.
    pub fn new(
        name: impl Into<String>,
        images: Vec<u8>,
        labels: Vec<u8>,
        shape: (usize, usize, usize),
        num_classes: usize,
    ) -> Result<Self, DataError> {
        let name = name.into();
        let (channels, height, width) = shape;
        let expected = labels
            .len()
            .checked_mul(channels)
            .and_then(|n| n.checked_mul(height))
            .and_then(|n| n.checked_mul(width));
        if expected != Some(images.len()) || channels == 0 || height == 0 || width == 0 {
            return Err(DataError::SizeMismatch {
                dataset: name,
                num_labels: labels.len(),
                channels,
                height,
                width,
                expected: expected.unwrap_or(usize::MAX),
                got: images.len(),
            });
        }
        if let Some((index, &label)) = labels
            .iter()
            .enumerate()
            .find(|&(_, &l)| usize::from(l) >= num_classes)
        {
            return Err(DataError::LabelOutOfRange {
                context: format!("data set {name}"),
                index,
                label,
                num_classes,
            });
        }
        Ok(Self {
            name,
            images,
            labels,
            channels,
            height,
            width,
            num_classes,
        })
    }

    /// Short name for logs, e.g. `fashion-mnist-bundled/train`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// All pixels, N x C x H x W.
    pub fn images(&self) -> &[u8] {
        &self.images
    }

    /// One label per image.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    pub fn height(&self) -> usize {
        self.height
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// `(channels, height, width)` of every image.
    pub fn image_shape(&self) -> (usize, usize, usize) {
        (self.channels, self.height, self.width)
    }

    /// Bytes per image: C x H x W.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The CHW pixels of image `index`, or `None` past the end.
    pub fn image(&self, index: usize) -> Option<&[u8]> {
        let n = self.image_len();
        let start = index.checked_mul(n)?;
        self.images.get(start..start.checked_add(n)?)
    }

    /// A new data set of the samples at `indices`, in that order (repeats allowed).
    ///
    /// # Panics
    /// If an index is `>= self.len()`: indices come from this crate's partitioners and orders,
    /// so an out-of-range one is a bug, like an out-of-range slice index.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let n = self.image_len();
        let mut images = Vec::with_capacity(indices.len() * n);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            images.extend_from_slice(&self.images[i * n..(i + 1) * n]);
            labels.push(self.labels[i]);
        }
        Dataset {
            name: self.name.clone(),
            images,
            labels,
            ..*self
        }
    }

    /// Number of samples per class, indexed by label.
    pub fn label_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes];
        for &l in &self.labels {
            counts[usize::from(l)] += 1;
        }
        counts
    }

    /// At most `limit` samples drawn at random without replacement (for `--limit N`), kept in
    /// their original order; the whole set when `limit >= len`. Same seed, same subset.
    pub fn seeded_subset(&self, limit: usize, seed: u64) -> Dataset {
        if limit >= self.len() {
            return self.clone();
        }
        let mut rng = StdRng::seed_from_u64(derive_seed(seed, SUBSET_STREAM));
        let mut indices = rand::seq::index::sample(&mut rng, self.len(), limit).into_vec();
        indices.sort_unstable();
        self.subset(&indices)
    }

    /// Splits off `held_out` samples drawn with `seed` (a validation split): returns the rest
    /// and the held-out samples, disjoint and together all of this set.
    pub fn seeded_split(&self, held_out: usize, seed: u64) -> (Dataset, Dataset) {
        let held_out = held_out.min(self.len());
        let mut rng = StdRng::seed_from_u64(derive_seed(seed, SPLIT_STREAM));
        let mut chosen = rand::seq::index::sample(&mut rng, self.len(), held_out).into_vec();
        chosen.sort_unstable();
        let mut is_held = vec![false; self.len()];
        for &i in &chosen {
            is_held[i] = true;
        }
        let rest: Vec<usize> = (0..self.len()).filter(|&i| !is_held[i]).collect();
        (self.subset(&rest), self.subset(&chosen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A split is disjoint, covers the set, has the asked size and depends only on the seed.
    #[test]
    fn a_seeded_split_partitions_the_set() {
        let images = (0..100u8).flat_map(|i| [i; 4]).collect();
        let labels = (0..100u8).map(|i| i % 3).collect();
        let set = Dataset::new("hundred", images, labels, (1, 2, 2), 3).unwrap();
        let (rest, held) = set.seeded_split(20, 5);
        assert_eq!((rest.len(), held.len()), (80, 20));
        let firsts =
            |d: &Dataset| -> Vec<u8> { (0..d.len()).map(|i| d.image(i).unwrap()[0]).collect() };
        let mut all = [firsts(&rest), firsts(&held)].concat();
        all.sort_unstable();
        assert_eq!(all, (0..100u8).collect::<Vec<_>>());
        assert_eq!(set.seeded_split(20, 5).1, held);
        assert_ne!(set.seeded_split(20, 6).1, held);
    }

    fn tiny() -> Dataset {
        // Four 1x2x2 images whose pixels equal their index, labels 0,1,2,1.
        let images = (0..4u8).flat_map(|i| [i; 4]).collect();
        Dataset::new("tiny", images, vec![0, 1, 2, 1], (1, 2, 2), 3).unwrap()
    }

    #[test]
    fn new_rejects_mismatched_sizes() {
        // Proves that pixel bytes must equal labels x C x H x W.
        let err = Dataset::new("x", vec![0; 7], vec![0, 1], (1, 2, 2), 2).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::SizeMismatch {
                    expected: 8,
                    got: 7,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn new_rejects_labels_out_of_range() {
        // Proves that a label >= num_classes is refused and its position reported.
        let err = Dataset::new("x", vec![0; 8], vec![0, 5], (1, 2, 2), 2).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::LabelOutOfRange {
                    index: 1,
                    label: 5,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn subset_copies_images_and_labels_in_order() {
        // Proves that subset picks the right image bytes and labels, in the order given.
        let ds = tiny();
        let sub = ds.subset(&[2, 0]);
        assert_eq!(sub.labels(), &[2, 0]);
        assert_eq!(sub.images(), &[2, 2, 2, 2, 0, 0, 0, 0]);
        assert_eq!(sub.image_shape(), (1, 2, 2));
        assert_eq!(ds.label_counts(), vec![1, 2, 1]);
    }

    #[test]
    fn seeded_subset_is_reproducible_and_bounded() {
        // Proves that --limit draws the same samples for the same seed and never more than asked.
        let ds = tiny();
        assert_eq!(ds.seeded_subset(2, 7), ds.seeded_subset(2, 7));
        assert_eq!(ds.seeded_subset(2, 7).len(), 2);
        assert_eq!(ds.seeded_subset(10, 7), ds);
    }
}

//! `fill_batch`: samples at given indices to a normalised NCHW `f32` batch and `u32` labels.

use rand::RngCore;

use super::augment::Augmentation;
use super::dataset::Dataset;
use super::error::DataError;
use super::normalize::Normalization;

/// Fills `images_out` with the images at `indices` as NCHW `f32` (normalised, augmented when
/// `augmentation` is given) and `labels_out` with their labels. Both are cleared first so the
/// caller can reuse their allocations across batches.
///
/// The random generator is a trait object so that `None` needs no type annotation.
pub fn fill_batch(
    ds: &Dataset,
    indices: &[usize],
    normalization: &Normalization,
    augmentation: Option<(&Augmentation, &mut dyn RngCore)>,
    images_out: &mut Vec<f32>,
    labels_out: &mut Vec<u32>,
) -> Result<(), DataError> {
    if normalization.channels() != ds.channels() {
        return Err(DataError::ChannelMismatch {
            dataset: ds.name().to_owned(),
            dataset_channels: ds.channels(),
            normalization: normalization.channels(),
        });
    }
    let tables = normalization.lookup_tables();
    let plane = ds.height() * ds.width();
    let mut augmentation = augmentation.filter(|(aug, _)| !aug.is_identity());
    let mut scratch = Vec::new();
    images_out.clear();
    labels_out.clear();
    images_out.reserve(indices.len() * ds.image_len());
    labels_out.reserve(indices.len());
    for &index in indices {
        let out_of_range = || DataError::IndexOutOfRange {
            dataset: ds.name().to_owned(),
            index,
            len: ds.len(),
        };
        let mut image = ds.image(index).ok_or_else(out_of_range)?;
        if let Some((aug, rng)) = augmentation.as_mut() {
            aug.apply(image, ds.image_shape(), &mut **rng, &mut scratch);
            image = &scratch;
        }
        for (pixels, table) in image.chunks_exact(plane).zip(&tables) {
            images_out.extend(pixels.iter().map(|&p| table[usize::from(p)]));
        }
        labels_out.push(u32::from(ds.labels()[index]));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::data::bundled;

    #[test]
    fn normalised_bundled_train_has_zero_mean_unit_std() {
        // Proves that statistics from the bundled train set make its batch ~N(0, 1) per channel,
        // and that the published Fashion-MNIST constants are close to this subset's own.
        let train = bundled::load().unwrap().train;
        let norm = Normalization::from_dataset(&train);
        let all: Vec<usize> = (0..train.len()).collect();
        let (mut images, mut labels) = (Vec::new(), Vec::new());
        fill_batch(&train, &all, &norm, None, &mut images, &mut labels).unwrap();
        assert_eq!(images.len(), 6000 * 784);
        let n = images.len() as f64;
        let mean = images.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = images
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        assert!(
            mean.abs() < 1e-4 && (var.sqrt() - 1.0).abs() < 1e-4,
            "mean {mean}, std {}",
            var.sqrt()
        );
        let known = Normalization::fashion_mnist();
        assert!((norm.mean()[0] - known.mean()[0]).abs() < 0.01, "{norm:?}");
        assert!((norm.std()[0] - known.std()[0]).abs() < 0.01, "{norm:?}");
        assert_eq!(
            labels,
            train
                .labels()
                .iter()
                .map(|&l| u32::from(l))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn augmented_batch_keeps_nchw_shape() {
        // Proves that crop + flip keep the batch at N x C x H x W with the right labels.
        let ds = Dataset::new(
            "rgb",
            (0..3 * 2 * 8 * 8).map(|i| i as u8).collect(),
            vec![1, 0, 1],
            (2, 8, 8),
            2,
        )
        .unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let (mut images, mut labels) = (Vec::new(), Vec::new());
        let aug = Augmentation::cifar();
        let norm = Normalization::unit(2);
        fill_batch(
            &ds,
            &[2, 0],
            &norm,
            Some((&aug, &mut rng)),
            &mut images,
            &mut labels,
        )
        .unwrap();
        assert_eq!((images.len(), labels), (2 * 2 * 8 * 8, vec![1, 1]));
    }

    #[test]
    fn fill_batch_rejects_bad_index_and_channels() {
        // Proves that an index past the end and a normalisation of the wrong width are errors.
        let ds = Dataset::new("g", vec![0; 4], vec![0], (1, 2, 2), 1).unwrap();
        let (mut images, mut labels) = (Vec::new(), Vec::new());
        let err = fill_batch(
            &ds,
            &[1],
            &Normalization::unit(1),
            None,
            &mut images,
            &mut labels,
        );
        assert!(matches!(
            err,
            Err(DataError::IndexOutOfRange {
                index: 1,
                len: 1,
                ..
            })
        ));
        let err = fill_batch(
            &ds,
            &[0],
            &Normalization::cifar10(),
            None,
            &mut images,
            &mut labels,
        );
        assert!(matches!(err, Err(DataError::ChannelMismatch { .. })));
    }
}

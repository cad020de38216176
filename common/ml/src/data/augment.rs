//! Training augmentation: random crop after zero padding, and random horizontal flip.
//!
//! As torchvision's `RandomCrop(32, padding=4)` + `RandomHorizontalFlip()`: padding is raw
//! pixel 0 (black) before normalisation, and each image gets its own crop offset and coin flip.

use rand::{Rng, RngCore};

/// Which augmentations run; the caller's flags decide (the CIFAR-10 default is
/// [`Augmentation::cifar`]). The default does nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Augmentation {
    /// Zero padding on each side before cropping back to the original size; 0 turns cropping off.
    pub crop_padding: usize,
    /// Mirror left-right with probability 1/2.
    pub horizontal_flip: bool,
}

impl Augmentation {
    /// No augmentation.
    pub fn none() -> Self {
        Self::default()
    }

    /// The standard CIFAR-10 recipe: crop with padding 4 and horizontal flip.
    pub fn cifar() -> Self {
        Self {
            crop_padding: 4,
            horizontal_flip: true,
        }
    }

    /// Whether this changes nothing, so callers can skip the copy.
    pub fn is_identity(&self) -> bool {
        self.crop_padding == 0 && !self.horizontal_flip
    }

    /// Writes an augmented copy of one CHW `image` of `shape` into `out` (cleared first).
    ///
    /// # Panics
    /// If `image.len()` is not `C x H x W`.
    pub fn apply(
        &self,
        image: &[u8],
        shape: (usize, usize, usize),
        rng: &mut dyn RngCore,
        out: &mut Vec<u8>,
    ) {
        let (channels, height, width) = shape;
        assert_eq!(
            image.len(),
            channels * height * width,
            "image does not match its shape"
        );
        let pad = self.crop_padding;
        // Offsets into the padded image, 0..=2*pad; `pad` is the un-shifted crop.
        let (dy, dx) = if pad > 0 {
            (rng.random_range(0..=2 * pad), rng.random_range(0..=2 * pad))
        } else {
            (0, 0)
        };
        let flip = self.horizontal_flip && rng.random_bool(0.5);
        out.clear();
        out.reserve(image.len());
        for plane in image.chunks_exact(height * width) {
            for y in 0..height {
                // Source row in the unpadded image; outside it lies padding.
                let sy = (y + dy).checked_sub(pad).filter(|&sy| sy < height);
                for x in 0..width {
                    let x = if flip { width - 1 - x } else { x };
                    let sx = (x + dx).checked_sub(pad).filter(|&sx| sx < width);
                    out.push(match (sy, sx) {
                        (Some(sy), Some(sx)) => plane[sy * width + sx],
                        _ => 0,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    /// A 2-channel 4x5 image whose pixel values encode (c, y, x), all non-zero.
    fn image() -> Vec<u8> {
        (0..2)
            .flat_map(|c| (0..4).flat_map(move |y| (0..5).map(move |x| 1 + 100 * c + 10 * y + x)))
            .collect()
    }

    #[test]
    fn flip_mirrors_rows_and_keeps_shape() {
        // Proves that a flip-only augmentation yields either the image or its left-right mirror.
        let (img, aug) = (
            image(),
            Augmentation {
                crop_padding: 0,
                horizontal_flip: true,
            },
        );
        let mirror: Vec<u8> = img
            .chunks(5)
            .flat_map(|row| row.iter().rev().copied())
            .collect();
        let mut rng = StdRng::seed_from_u64(3);
        let (mut seen_flip, mut seen_same, mut out) = (false, false, Vec::new());
        for _ in 0..64 {
            aug.apply(&img, (2, 4, 5), &mut rng, &mut out);
            assert_eq!(out.len(), img.len());
            seen_flip |= out == mirror;
            seen_same |= out == img;
            assert!(out == mirror || out == img);
        }
        assert!(seen_flip && seen_same);
    }

    #[test]
    fn crop_shifts_content_and_pads_with_zero() {
        // Proves that a padded crop keeps the shape, and every output pixel is either padding (0)
        // or the source pixel shifted by one common offset (per image, across channels).
        let (img, aug) = (
            image(),
            Augmentation {
                crop_padding: 2,
                horizontal_flip: false,
            },
        );
        let mut rng = StdRng::seed_from_u64(9);
        let mut out = Vec::new();
        for _ in 0..64 {
            aug.apply(&img, (2, 4, 5), &mut rng, &mut out);
            assert_eq!(out.len(), img.len());
            let mut offset = None;
            for (i, &v) in out.iter().enumerate() {
                if v == 0 {
                    continue;
                }
                let (c, y, x) = (i / 20, (i % 20) / 5, i % 5);
                let v = usize::from(v) - 1;
                let (sc, sy, sx) = (v / 100, (v % 100) / 10, v % 10);
                assert_eq!(sc, c);
                let d = (sy as isize - y as isize, sx as isize - x as isize);
                assert!(d.0.abs() <= 2 && d.1.abs() <= 2);
                assert_eq!(*offset.get_or_insert(d), d);
            }
        }
    }
}

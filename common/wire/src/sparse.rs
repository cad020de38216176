//! Top-k sparsification: a tensor travels as the k values of largest magnitude and their
//! positions (little-endian u32 indices, strictly increasing), on top of any value encoding.
//! Everything not sent counts as 0, so only deltas may be sparse; what top-k drops is what the
//! worker's error feedback carries to its next round.

use std::fmt;

/// The fraction of each tensor's values a sparse update keeps, in (0, 1].
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct TopK(f64);

impl TopK {
    pub fn new(fraction: f64) -> Result<Self, String> {
        if fraction.is_finite() && fraction > 0.0 && fraction <= 1.0 {
            Ok(Self(fraction))
        } else {
            Err(format!(
                "top-k fraction {fraction} must be in (0, 1] (0 turns top-k off)"
            ))
        }
    }

    pub fn fraction(self) -> f64 {
        self.0
    }

    /// Values kept of a tensor of `n`: `ceil(fraction * n)`, at least one of a non-empty tensor.
    pub fn kept(self, n: usize) -> usize {
        ((self.0 * n as f64).ceil() as usize).clamp(n.min(1), n)
    }
}

impl fmt::Display for TopK {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Positions of the `k` values of largest magnitude (finite values), increasing.
pub fn largest(values: &[f32], k: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..values.len() as u32).collect();
    if k < values.len() {
        let magnitude = |i: &u32| values[*i as usize].abs();
        // Largest first; ties broken by position so the choice never depends on the sort.
        order.select_nth_unstable_by(k, |a, b| {
            magnitude(b).total_cmp(&magnitude(a)).then(a.cmp(b))
        });
        order.truncate(k);
    }
    order.sort_unstable();
    order
}

/// Reads the index section of a sparse tensor of `n` values: indices below `n`, strictly
/// increasing (so none repeats).
pub fn decode_indices(bytes: &[u8], n: u64) -> Result<Vec<u32>, String> {
    let mut indices = Vec::with_capacity(bytes.len() / 4);
    for (pos, b) in bytes.chunks_exact(4).enumerate() {
        let i = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if u64::from(i) >= n {
            return Err(format!(
                "sparse index {i} (entry {pos}) is out of range for {n} values"
            ));
        }
        if let Some(prev) = indices.last()
            && i <= *prev
        {
            return Err(format!(
                "sparse index {i} (entry {pos}) does not follow {prev}: indices must strictly increase"
            ));
        }
        indices.push(i);
    }
    Ok(indices)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fractions outside (0, 1] are refused; the kept count rounds up and keeps at least one.
    #[test]
    fn fractions_are_validated_and_round_up() {
        for bad in [0.0, -0.1, 1.5, f64::NAN, f64::INFINITY] {
            assert!(TopK::new(bad).is_err(), "{bad}");
        }
        let k = TopK::new(0.1).unwrap();
        assert_eq!(k.kept(100), 10);
        assert_eq!(k.kept(101), 11);
        assert_eq!(k.kept(3), 1);
        assert_eq!(k.kept(0), 0);
        assert_eq!(TopK::new(1.0).unwrap().kept(7), 7);
    }

    /// The largest magnitudes win whatever their sign, and come back in increasing order.
    #[test]
    fn largest_magnitudes_in_increasing_order() {
        let v = [0.1, -5.0, 3.0, 0.0, -0.2, 4.0];
        assert_eq!(largest(&v, 3), vec![1, 2, 5]);
        assert_eq!(largest(&v, 6), vec![0, 1, 2, 3, 4, 5]);
        assert!(largest(&v, 0).is_empty());
        // Ties: the earlier position is kept.
        assert_eq!(largest(&[1.0, -1.0, 1.0], 2), vec![0, 1]);
    }

    /// Out-of-range, repeated and decreasing indices are refused with the entry named.
    #[test]
    fn bad_indices_are_refused() {
        let bytes = |v: &[u32]| v.iter().flat_map(|i| i.to_le_bytes()).collect::<Vec<u8>>();
        assert_eq!(
            decode_indices(&bytes(&[0, 3, 9]), 10).unwrap(),
            vec![0, 3, 9]
        );
        let e = decode_indices(&bytes(&[0, 10]), 10).unwrap_err();
        assert!(e.contains("out of range") && e.contains("entry 1"), "{e}");
        let e = decode_indices(&bytes(&[2, 2]), 10).unwrap_err();
        assert!(e.contains("strictly increase"), "{e}");
        assert!(decode_indices(&bytes(&[5, 1]), 10).is_err());
        assert!(decode_indices(&bytes(&[0]), 0).is_err());
    }
}

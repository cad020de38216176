//! Size arithmetic for buffer lengths and bounds checks that guard unsafe code: products and
//! sums that panic with a clear message instead of wrapping (in release builds `a * b` wraps
//! silently, and a wrapped length would let a bounds check pass for a buffer that is too short).

/// `factors` multiplied together; panics naming `what` if the product overflows `usize`.
#[track_caller]
#[inline]
pub fn product(what: &str, factors: &[usize]) -> usize {
    factors
        .iter()
        .try_fold(1usize, |acc, &f| acc.checked_mul(f))
        .unwrap_or_else(|| overflow(what, "product", factors))
}

/// `terms` added up; panics naming `what` if the sum overflows `usize`.
#[track_caller]
#[inline]
pub fn sum(what: &str, terms: &[usize]) -> usize {
    terms
        .iter()
        .try_fold(0usize, |acc, &t| acc.checked_add(t))
        .unwrap_or_else(|| overflow(what, "sum", terms))
}

#[cold]
#[track_caller]
fn overflow(what: &str, op: &str, operands: &[usize]) -> ! {
    panic!("size of {what} overflows usize: the {op} of {operands:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves in-range sizes come out exact and overflowing ones panic instead of wrapping.
    #[test]
    fn sizes_are_exact_or_panic() {
        assert_eq!(product("t", &[3, 4, 5]), 60);
        assert_eq!(product("t", &[]), 1);
        assert_eq!(sum("t", &[3, 4, 5]), 12);
        assert!(std::panic::catch_unwind(|| product("t", &[usize::MAX / 2, 3])).is_err());
        assert!(std::panic::catch_unwind(|| sum("t", &[usize::MAX, 1])).is_err());
    }

    #[test]
    #[should_panic(expected = "size of weights overflows usize")]
    fn the_panic_names_the_size() {
        product("weights", &[usize::MAX / 2, 2, 2]);
    }
}

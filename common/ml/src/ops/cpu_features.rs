//! Proof that this CPU runs the AVX2 + FMA kernels: a token only a successful run-time check can
//! make, which every safe entry point into `#[target_feature(enable = "avx2,fma")]` code takes.
//!
//! Running such code on a CPU without those instructions is undefined behaviour (an illegal
//! instruction at best). With a token argument the check cannot be forgotten: the kernels cannot
//! be called without one, and the only way to get one is [`Avx2Fma::detect`].

/// This CPU has AVX2 and FMA. Zero-sized: passing it costs nothing.
#[derive(Debug, Clone, Copy)]
pub struct Avx2Fma(());

impl Avx2Fma {
    /// The token, if this CPU has AVX2 and FMA (`std` caches the answer after the first call).
    pub fn detect() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        {
            (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
                .then_some(Self(()))
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the token agrees with `std`'s own detection, the fact the kernels rely on.
    #[test]
    fn the_token_exists_exactly_where_the_cpu_has_avx2_and_fma() {
        #[cfg(target_arch = "x86_64")]
        let has = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        #[cfg(not(target_arch = "x86_64"))]
        let has = false;
        assert_eq!(Avx2Fma::detect().is_some(), has);
    }

    /// Proves the build script's `fedcsg_host_avx2` (which un-ignores the kernel tests) is set
    /// exactly on CPUs that have the token, as tests run where they were built.
    #[test]
    fn the_build_script_saw_the_same_cpu() {
        assert_eq!(Avx2Fma::detect().is_some(), cfg!(fedcsg_host_avx2));
    }
}

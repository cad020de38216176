//! Which vector instructions the direct convolution kernels may use, and the proof that this CPU
//! has them: tokens only a successful run-time check can make, which every safe entry point into
//! `#[target_feature]` code takes.
//!
//! Running such code on a CPU without those instructions is undefined behaviour (an illegal
//! instruction at best). With a token argument the check cannot be forgotten: the kernels cannot
//! be called without one, and the only way to get one is [`Avx2Fma::detect`] or
//! [`Avx512::detect`].
//!
//! [`VectorIsa::selected`] is the kernels' choice: the widest ISA the CPU has, unless the
//! `FEDCSG_ISA` environment variable (`avx512`, `avx2` or `generic`) asks for a narrower one, so
//! that tests and benchmarks can force each path on a machine that has them. `generic` means no
//! direct kernels: every convolution runs im2col + gemm (the `gemm` crate dispatches on the CPU
//! by itself).

use std::fmt;
use std::sync::OnceLock;

/// The environment variable that overrides the kernels' ISA.
pub const ISA_ENV: &str = "FEDCSG_ISA";

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

/// This CPU has AVX-512 Foundation (512-bit vectors, 32 registers, mask registers, FMA on
/// 512-bit vectors) as well as AVX2 and FMA. Zero-sized.
#[derive(Debug, Clone, Copy)]
pub struct Avx512(());

impl Avx512 {
    /// The token, if this CPU has AVX-512F, AVX2 and FMA.
    pub fn detect() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        {
            (is_x86_feature_detected!("avx512f") && Avx2Fma::detect().is_some()).then_some(Self(()))
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            None
        }
    }

    /// An AVX-512 CPU runs the AVX2 kernels as well.
    pub fn avx2(self) -> Avx2Fma {
        Avx2Fma(())
    }
}

/// The instruction set of the direct convolution kernels, with the proof that the CPU has it.
#[derive(Debug, Clone, Copy)]
pub enum VectorIsa {
    Avx512(Avx512),
    Avx2(Avx2Fma),
}

/// An ISA by name, as `FEDCSG_ISA` and `fedcsg bench` spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsaName {
    Avx512,
    Avx2,
    /// No direct kernels: im2col + gemm.
    Generic,
}

impl IsaName {
    pub const ALL: [IsaName; 3] = [IsaName::Avx512, IsaName::Avx2, IsaName::Generic];

    pub fn as_str(self) -> &'static str {
        match self {
            IsaName::Avx512 => "avx512",
            IsaName::Avx2 => "avx2",
            IsaName::Generic => "generic",
        }
    }

    /// The name from its spelling (`avx512`, `avx2`, `generic`; case-insensitive).
    pub fn parse(s: &str) -> Result<Self, IsaError> {
        Self::ALL
            .into_iter()
            .find(|isa| isa.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| IsaError::Unknown(s.to_owned()))
    }

    /// The widest ISA this CPU has.
    pub fn best() -> Self {
        if Avx512::detect().is_some() {
            IsaName::Avx512
        } else if Avx2Fma::detect().is_some() {
            IsaName::Avx2
        } else {
            IsaName::Generic
        }
    }

    /// The kernels' ISA of this name, with its proof; `Ok(None)` for `generic`, an error if the
    /// CPU lacks it.
    pub fn resolve(self) -> Result<Option<VectorIsa>, IsaError> {
        let missing = || IsaError::Unsupported(self);
        match self {
            IsaName::Avx512 => Avx512::detect()
                .map(|cpu| Some(VectorIsa::Avx512(cpu)))
                .ok_or_else(missing),
            IsaName::Avx2 => Avx2Fma::detect()
                .map(|cpu| Some(VectorIsa::Avx2(cpu)))
                .ok_or_else(missing),
            IsaName::Generic => Ok(None),
        }
    }
}

impl fmt::Display for IsaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an ISA cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsaError {
    #[error("{ISA_ENV}={0:?} is not an ISA: expected avx512, avx2 or generic")]
    Unknown(String),
    #[error(
        "{ISA_ENV} asks for {0}, which this CPU does not have (it has {best})",
        best = IsaName::best()
    )]
    Unsupported(IsaName),
}

/// The ISA `FEDCSG_ISA` asks for (the best one when unset), checked against this CPU.
pub fn isa_from_env() -> Result<IsaName, IsaError> {
    match std::env::var(ISA_ENV) {
        Ok(value) if !value.trim().is_empty() => {
            let name = IsaName::parse(&value)?;
            name.resolve()?;
            Ok(name)
        }
        _ => Ok(IsaName::best()),
    }
}

impl VectorIsa {
    /// The ISA the kernels use in this process: `FEDCSG_ISA` if set and valid, else the widest
    /// the CPU has; `None` means im2col + gemm only. Read once. An invalid `FEDCSG_ISA` falls
    /// back to the best ISA with a message on stderr; binaries check it at start-up with
    /// [`isa_from_env`] and refuse to run instead.
    pub fn selected() -> Option<VectorIsa> {
        static SELECTED: OnceLock<Option<VectorIsa>> = OnceLock::new();
        *SELECTED.get_or_init(|| {
            let name = isa_from_env().unwrap_or_else(|e| {
                let best = IsaName::best();
                eprintln!("fedcsg: {e}; using {best}");
                best
            });
            name.resolve().unwrap_or_else(|_| {
                unreachable!("the selected ISA was checked against this CPU when it was chosen")
            })
        })
    }

    /// The name of the ISA `selected` returns.
    pub fn selected_name() -> IsaName {
        Self::selected().map_or(IsaName::Generic, |isa| isa.name())
    }

    pub fn name(self) -> IsaName {
        match self {
            VectorIsa::Avx512(_) => IsaName::Avx512,
            VectorIsa::Avx2(_) => IsaName::Avx2,
        }
    }

    /// Every kernel ISA this CPU has, widest first: what tests run each kernel through.
    pub fn all_available() -> Vec<VectorIsa> {
        IsaName::ALL
            .into_iter()
            .filter_map(|name| name.resolve().ok().flatten())
            .collect()
    }
}

/// Runs `f` inlined into a function compiled for the selected ISA, so that the loops in `f`
/// (batch norm, residual sums: plain Rust the compiler vectorises) use 16-float vectors on
/// AVX-512 and 8-float ones on AVX2 instead of the baseline x86-64's 4-float SSE.
///
/// This works by inlining: a function without target features may be inlined into one with
/// them, and is then compiled with them. Should the compiler not inline `f`, it runs as it
/// would have anyway; either way the result is the same.
#[inline]
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    match VectorIsa::selected() {
        // SAFETY: the token proves the CPU has AVX-512F (and AVX2, FMA).
        #[cfg(target_arch = "x86_64")]
        Some(VectorIsa::Avx512(_)) => unsafe { in_avx512(f) },
        // SAFETY: the token proves the CPU has AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Some(VectorIsa::Avx2(_)) => unsafe { in_avx2(f) },
        _ => f(),
    }
}

/// # Safety
/// The CPU has AVX-512F, AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn in_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn in_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the tokens agree with `std`'s own detection, the fact the kernels rely on.
    #[test]
    fn the_tokens_exist_exactly_where_the_cpu_has_the_features() {
        #[cfg(target_arch = "x86_64")]
        let (avx2, avx512) = {
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            (avx2, avx2 && is_x86_feature_detected!("avx512f"))
        };
        #[cfg(not(target_arch = "x86_64"))]
        let (avx2, avx512) = (false, false);
        assert_eq!(Avx2Fma::detect().is_some(), avx2);
        assert_eq!(Avx512::detect().is_some(), avx512);
    }

    /// Proves the build script's cfgs (which un-ignore the kernel tests) are set exactly on CPUs
    /// that have the tokens, as tests run where they were built.
    #[test]
    fn the_build_script_saw_the_same_cpu() {
        assert_eq!(Avx2Fma::detect().is_some(), cfg!(fedcsg_host_avx2));
        assert_eq!(Avx512::detect().is_some(), cfg!(fedcsg_host_avx512));
    }

    #[test]
    fn isa_names_parse_and_refuse_what_is_not_one() {
        for name in IsaName::ALL {
            assert_eq!(IsaName::parse(name.as_str()), Ok(name));
        }
        assert_eq!(IsaName::parse(" AVX512 "), Ok(IsaName::Avx512));
        let err = IsaName::parse("sse9").unwrap_err();
        assert_eq!(err, IsaError::Unknown("sse9".into()));
        assert!(err.to_string().contains("expected avx512, avx2 or generic"));
    }

    #[test]
    fn resolving_an_isa_checks_the_cpu() {
        assert!(matches!(IsaName::Generic.resolve(), Ok(None)));
        assert_eq!(
            IsaName::Avx512.resolve().is_ok(),
            Avx512::detect().is_some()
        );
        assert_eq!(IsaName::Avx2.resolve().is_ok(), Avx2Fma::detect().is_some());
        if Avx512::detect().is_none() {
            let err = IsaName::Avx512.resolve().unwrap_err();
            assert!(err.to_string().contains("does not have"), "{err}");
        }
        // Widest first, and only what the CPU has.
        let names: Vec<IsaName> = VectorIsa::all_available()
            .iter()
            .map(|i| i.name())
            .collect();
        let expected: Vec<IsaName> = [IsaName::Avx512, IsaName::Avx2]
            .into_iter()
            .filter(|n| n.resolve().is_ok())
            .collect();
        assert_eq!(names, expected);
        assert_eq!(
            IsaName::best().resolve().ok().flatten().map(|i| i.name()),
            names.first().copied()
        );
    }
}

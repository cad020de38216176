//! Tells the tests which vector kernels can run on this machine.
//!
//! Sets `cfg(fedcsg_host_avx2)` when the build host has AVX2 and FMA, and `cfg(fedcsg_host_avx512)`
//! when it also has AVX-512F, provided it builds for itself. The kernel tests that compare each
//! path with im2col + gemm are marked `#[cfg_attr(not(fedcsg_host_avx512), ignore = "...")]` (or
//! the AVX2 one), so that on a CPU without those instructions they show up as ignored, with the
//! reason, instead of passing without checking anything.
//!
//! This rests on tests running on the machine that built them (what `cargo test` does). The
//! library itself never reads the cfgs: the kernels choose their path at run time
//! (`cpu_features`), and a unit test there fails if the running CPU disagrees with what the
//! build saw.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(fedcsg_host_avx2)");
    println!("cargo::rustc-check-cfg=cfg(fedcsg_host_avx512)");
    // The kernels' target, not the build script's own, decides; both must be this machine.
    let target_is_host = std::env::var("TARGET").ok() == std::env::var("HOST").ok();
    let (avx2, avx512) = host_features();
    if target_is_host && avx2 {
        println!("cargo::rustc-cfg=fedcsg_host_avx2");
        if avx512 {
            println!("cargo::rustc-cfg=fedcsg_host_avx512");
        }
    }
}

/// Whether the host has (AVX2 + FMA, AVX-512F).
#[cfg(target_arch = "x86_64")]
fn host_features() -> (bool, bool) {
    let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
    (avx2, avx2 && std::is_x86_feature_detected!("avx512f"))
}

#[cfg(not(target_arch = "x86_64"))]
fn host_features() -> (bool, bool) {
    (false, false)
}

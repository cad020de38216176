//! Tells the tests whether the AVX2 kernels can run on this machine.
//!
//! Sets `cfg(fedcsg_host_avx2)` when the build host has AVX2 and FMA and builds for itself. The
//! kernel tests that compare the AVX2 paths with im2col + gemm are marked
//! `#[cfg_attr(not(fedcsg_host_avx2), ignore = "...")]`, so that on a CPU without them they show
//! up as ignored, with the reason, instead of passing without checking anything.
//!
//! This rests on tests running on the machine that built them (what `cargo test` does). The
//! library itself never reads the cfg: the kernels choose their path at run time
//! (`Avx2Fma::detect`), and a unit test (`cpu_features`) fails if the running CPU disagrees
//! with what the build saw.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(fedcsg_host_avx2)");
    // The kernels' target, not the build script's own, decides; both must be this machine.
    let target_is_host = std::env::var("TARGET").ok() == std::env::var("HOST").ok();
    if target_is_host && host_has_avx2_fma() {
        println!("cargo::rustc-cfg=fedcsg_host_avx2");
    }
}

#[cfg(target_arch = "x86_64")]
fn host_has_avx2_fma() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

#[cfg(not(target_arch = "x86_64"))]
fn host_has_avx2_fma() -> bool {
    false
}

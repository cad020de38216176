//! The Convolutional Slice Generator: one linear map without bias from a code vector (size C)
//! to a kernel slice of `S x S x k x k` weights, shared by every generated layer of a network.

use candle_core::{Device, Tensor};
use candle_nn::{Init, VarBuilder};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

use super::{CodeInit, CsgShape, SliceLayout};

/// The shared generator `G` with weight `[S*S*k*k, C]` (PyTorch `Linear(C, S*S*k*k)` layout).
#[derive(Debug, Clone)]
pub struct SliceGenerator {
    weight: Tensor,
    shape: CsgShape,
    kernel: usize,
    layout: SliceLayout,
    /// The standard deviation of the generator's entries at the start.
    entry_std: f64,
    codes: CodeInit,
}

impl SliceGenerator {
    /// A trained generator stored as `weight` under `vb` (Kaiming-normal, fan-in = C).
    pub fn trained(
        shape: CsgShape,
        kernel: usize,
        layout: SliceLayout,
        codes: CodeInit,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let out = shape.slice * shape.slice * kernel * kernel;
        let std = (2.0 / shape.code as f64).sqrt();
        let weight = vb.get_with_hints(
            (out, shape.code),
            "weight",
            Init::Randn {
                mean: 0.0,
                stdev: std,
            },
        )?;
        Ok(Self {
            weight,
            shape,
            kernel,
            layout,
            entry_std: std,
            codes,
        })
    }

    /// The seeded generator `0.5 * sign(N(0,1))` drawn from `seed`; it is a constant, not a
    /// variable, so it is never trained, saved or exchanged: every node rebuilds the same one.
    pub fn seeded(
        shape: CsgShape,
        kernel: usize,
        layout: SliceLayout,
        seed: u64,
        codes: CodeInit,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let out = shape.slice * shape.slice * kernel * kernel;
        let weight = Tensor::from_vec(
            seeded_signs(out * shape.code, seed),
            (out, shape.code),
            device,
        )?;
        Ok(Self {
            weight,
            shape,
            kernel,
            layout,
            entry_std: 0.5,
            codes,
        })
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn shape(&self) -> CsgShape {
        self.shape
    }

    pub fn kernel(&self) -> usize {
        self.kernel
    }

    /// The standard deviation a layer's codes start with for `c_in` input channels: 1 (the
    /// reference code), or with [`CodeInit::FanIn`] whatever makes the generated filters start
    /// at the He scale `sqrt(2 / (c_in k²))` of full filters (a generated weight sums C products
    /// of a code entry and a generator entry).
    pub fn code_std(&self, c_in: usize) -> f64 {
        match self.codes {
            CodeInit::Unit => 1.0,
            CodeInit::FanIn => {
                let he = (2.0 / (c_in * self.kernel * self.kernel) as f64).sqrt();
                he / (self.entry_std * (self.shape.code as f64).sqrt())
            }
        }
    }

    /// Number of code vectors a `[c_out, c_in, k, k]` layer needs.
    pub fn codes_for(&self, c_out: usize, c_in: usize) -> usize {
        c_out.div_ceil(self.shape.slice) * c_in.div_ceil(self.shape.slice)
    }

    /// Generates the `[c_out, c_in, k, k]` kernel from `codes` (`[n_out_blocks * n_in_blocks, C]`,
    /// block `(i, j)` at row `i * n_in_blocks + j`). Differentiable in both `codes` and `G`.
    pub fn generate(
        &self,
        codes: &Tensor,
        c_out: usize,
        c_in: usize,
    ) -> candle_core::Result<Tensor> {
        let s = self.shape.slice;
        let k = self.kernel;
        let (n_o, n_i) = (c_out.div_ceil(s), c_in.div_ceil(s));
        // [n_codes, C] x [C, S*S*k*k]
        let slices = codes.matmul(&self.weight.t()?)?;
        match self.layout {
            SliceLayout::AlignedBlocks => {
                let blocks = slices.reshape((n_o, n_i, s, s * k * k))?;
                // [n_o, S, n_i, S*k*k]: output channel i*S + a, input channel j*S + b.
                let kernel = blocks.transpose(1, 2)?.reshape((n_o * s, n_i * s, k, k))?;
                let kernel = if n_o * s != c_out {
                    kernel.narrow(0, 0, c_out)?
                } else {
                    kernel
                };
                let kernel = if n_i * s != c_in {
                    kernel.narrow(1, 0, c_in)?
                } else {
                    kernel
                };
                kernel.contiguous()
            }
            SliceLayout::RowMajor => {
                let flat = slices.flatten_all()?.narrow(0, 0, c_out * c_in * k * k)?;
                flat.reshape((c_out, c_in, k, k))
            }
        }
    }
}

/// `0.5 * sign(x)` for `n` standard-normal draws from a seeded, platform-independent generator.
fn seeded_signs(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let x: f64 = StandardNormal.sample(&mut rng);
            if x >= 0.0 { 0.5 } else { -0.5 }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, IndexOp};

    fn generator(slice: usize, code: usize, layout: SliceLayout) -> SliceGenerator {
        let out = slice * slice * 9;
        // G[r, c] = r * 1000 + c makes every generated weight identify its source row.
        let data: Vec<f32> = (0..out * code)
            .map(|i| ((i / code) * 1000 + i % code) as f32)
            .collect();
        let weight = Tensor::from_vec(data, (out, code), &Device::Cpu).unwrap();
        SliceGenerator {
            weight,
            shape: CsgShape { slice, code },
            kernel: 3,
            layout,
            entry_std: 1.0,
            codes: CodeInit::Unit,
        }
    }

    /// With one-hot codes, the generated kernel places slice rows into aligned S x S blocks and
    /// crops the ragged edge: weight[o, i, y, x] of block (bo, bi) comes from G row
    /// ((o % S) * S + (i % S)) * 9 + y * 3 + x and from the code of that block.
    #[test]
    fn aligned_blocks_are_laid_out_and_cropped() {
        let (s, c) = (2, 6);
        let g = generator(s, c, SliceLayout::AlignedBlocks);
        let (c_out, c_in) = (3, 5); // 2 x 3 blocks, cropped from 4 x 6
        let n = g.codes_for(c_out, c_in);
        assert_eq!(n, 6);
        // code of block b is one-hot at b.
        let codes = Tensor::eye(n, DType::F32, &Device::Cpu).unwrap();
        let w = g.generate(&codes, c_out, c_in).unwrap();
        assert_eq!(w.dims(), &[3, 5, 3, 3]);
        for o in 0..c_out {
            for i in 0..c_in {
                for y in 0..3 {
                    for x in 0..3 {
                        let block = (o / s) * c_in.div_ceil(s) + i / s;
                        let row = ((o % s) * s + (i % s)) * 9 + y * 3 + x;
                        let got = w.i((o, i, y, x)).unwrap().to_scalar::<f32>().unwrap();
                        assert_eq!(got, (row * 1000 + block) as f32, "o={o} i={i} y={y} x={x}");
                    }
                }
            }
        }
    }

    /// The seeded generator is identical for the same seed, different for another, and only ±0.5.
    #[test]
    fn seeded_generator_is_reproducible() {
        let shape = CsgShape { slice: 4, code: 8 };
        let a = SliceGenerator::seeded(
            shape,
            3,
            SliceLayout::AlignedBlocks,
            7,
            CodeInit::Unit,
            &Device::Cpu,
        )
        .unwrap();
        let b = SliceGenerator::seeded(
            shape,
            3,
            SliceLayout::AlignedBlocks,
            7,
            CodeInit::Unit,
            &Device::Cpu,
        )
        .unwrap();
        let c = SliceGenerator::seeded(
            shape,
            3,
            SliceLayout::AlignedBlocks,
            8,
            CodeInit::Unit,
            &Device::Cpu,
        )
        .unwrap();
        let va: Vec<f32> = a.weight.flatten_all().unwrap().to_vec1().unwrap();
        let vb: Vec<f32> = b.weight.flatten_all().unwrap().to_vec1().unwrap();
        let vc: Vec<f32> = c.weight.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(va, vb);
        assert_ne!(va, vc);
        assert!(va.iter().all(|v| *v == 0.5 || *v == -0.5));
        let positives = va.iter().filter(|v| **v > 0.0).count();
        assert!(positives > va.len() / 3 && positives < 2 * va.len() / 3);
    }
}

//! The shape of one 2-D convolution, validated once and shared by the forward and both gradients.

use candle_core::Shape;

/// Why a convolution's operands do not fit together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvShapeError {
    #[error("conv2d input must be [n, c, h, w], got {dims:?}")]
    InputRank { dims: Vec<usize> },
    #[error("conv2d weight must be [c_out, c_in, kh, kw], got {dims:?}")]
    WeightRank { dims: Vec<usize> },
    #[error("conv2d input has {input} channels but the weight expects {weight}")]
    Channels { input: usize, weight: usize },
    #[error("conv2d stride must be at least 1")]
    ZeroStride,
    #[error("conv2d kernel {kh}x{kw} does not fit the padded {h}x{w} input (padding {padding})")]
    KernelTooLarge {
        kh: usize,
        kw: usize,
        h: usize,
        w: usize,
        padding: usize,
    },
    #[error("conv2d gradient has shape {got:?}, expected {expected:?}")]
    Gradient {
        got: Vec<usize>,
        expected: Vec<usize>,
    },
}

impl From<ConvShapeError> for candle_core::Error {
    fn from(e: ConvShapeError) -> Self {
        candle_core::Error::wrap(e)
    }
}

/// Sizes of a convolution of `[batch, c_in, h, w]` with `[c_out, c_in, kh, kw]`, symmetric stride
/// and zero padding, no dilation, one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub batch: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub padding: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeometry {
    pub fn new(
        input: &[usize],
        weight: &[usize],
        stride: usize,
        padding: usize,
    ) -> Result<Self, ConvShapeError> {
        let &[batch, c_in, h, w] = input else {
            return Err(ConvShapeError::InputRank {
                dims: input.to_vec(),
            });
        };
        let &[c_out, wc_in, kh, kw] = weight else {
            return Err(ConvShapeError::WeightRank {
                dims: weight.to_vec(),
            });
        };
        if wc_in != c_in {
            return Err(ConvShapeError::Channels {
                input: c_in,
                weight: wc_in,
            });
        }
        if stride == 0 {
            return Err(ConvShapeError::ZeroStride);
        }
        let (ph, pw) = (h + 2 * padding, w + 2 * padding);
        if kh == 0 || kw == 0 || kh > ph || kw > pw {
            return Err(ConvShapeError::KernelTooLarge {
                kh,
                kw,
                h,
                w,
                padding,
            });
        }
        let oh = (ph - kh) / stride + 1;
        let ow = (pw - kw) / stride + 1;
        Ok(Self {
            batch,
            c_in,
            h,
            w,
            c_out,
            kh,
            kw,
            stride,
            padding,
            oh,
            ow,
        })
    }

    /// Rows of the im2col matrix: one per (input channel, kernel row, kernel column).
    pub fn patch_len(&self) -> usize {
        self.c_in * self.kh * self.kw
    }

    pub fn in_pixels(&self) -> usize {
        self.h * self.w
    }

    pub fn out_pixels(&self) -> usize {
        self.oh * self.ow
    }

    pub fn input_shape(&self) -> Shape {
        Shape::from((self.batch, self.c_in, self.h, self.w))
    }

    pub fn weight_shape(&self) -> Shape {
        Shape::from((self.c_out, self.c_in, self.kh, self.kw))
    }

    pub fn output_shape(&self) -> Shape {
        Shape::from((self.batch, self.c_out, self.oh, self.ow))
    }

    /// A 1x1, stride-1, unpadded convolution reads each image as its own im2col matrix, so the
    /// kernels skip the copy.
    pub fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.padding == 0
    }

    /// Checks that a gradient flowing back into the output has the output's shape.
    pub fn check_output_grad(&self, dims: &[usize]) -> Result<(), ConvShapeError> {
        let expected = self.output_shape().dims().to_vec();
        if dims != expected.as_slice() {
            return Err(ConvShapeError::Gradient {
                got: dims.to_vec(),
                expected,
            });
        }
        Ok(())
    }
}

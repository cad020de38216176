//! How a generated conv layer lays its slices out into a kernel (DESIGN §1.1).

/// How generated slices are laid out into a kernel.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum SliceLayout {
    /// Block `(i, j)` holds output channels `i*S..` and input channels `j*S..` (DESIGN §1.1).
    #[default]
    AlignedBlocks,
    /// The authors' PyTorch code: all slices concatenated and reshaped row-major.
    RowMajor,
}

//! One op per file, its WGSL kernel beside it.

mod activation;
mod add;
mod attention;
mod choose;
mod conv1d;
mod embedding;
mod layer_norm;
mod linear;
mod linear_q;
mod rotary;
mod softmax;

pub use activation::{activation, Activation};
pub use add::add;
pub use attention::{attention, KvCache, MAX_KEYS};
pub use choose::choose_last_row;
pub use conv1d::conv1d;
pub use embedding::embedding;
pub use layer_norm::layer_norm;
pub use linear::linear;
pub use linear_q::{linear_q, GgmlBlocks, QMatrix};
pub use rotary::{rotary, RotaryTables};
pub use softmax::softmax_last_dim;

/// Workgroups needed to cover `n` items, `per` at a time, as a 2-D grid when one dimension
/// would pass WebGPU's 65 535 limit.
pub(crate) fn grid(n: usize, per: usize) -> [u32; 3] {
    let groups = n.div_ceil(per).max(1) as u32;
    if groups <= 65_535 {
        [groups, 1, 1]
    } else {
        [65_535, groups.div_ceil(65_535), 1]
    }
}

/// The uniform of the matrix products: `y[m, n] = x[m, k] · w[n, k]ᵀ (+ b)`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct MatmulParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub has_bias: u32,
}

/// Threads per output column the matrix-vector kernels come in (`Tuning::max_lanes` picks).
pub(crate) const LANE_SPLITS: [usize; 6] = [1, 2, 4, 8, 16, 32];

/// Which of `LANE_SPLITS` `lanes` is (to pick a pipeline key).
pub(crate) fn lane_split(lanes: usize) -> usize {
    LANE_SPLITS
        .iter()
        .position(|&l| l == lanes)
        .expect("a power of two ≤ 32")
}

/// A kernel's source with `LANES` and the shared lane reduction in front of it (WGSL has no
/// includes), after `consts`.
pub(crate) fn with_lanes(consts: &str, lanes: usize, shader: &str) -> String {
    format!(
        "{consts}const LANES: u32 = {lanes}u;\n{}{shader}",
        include_str!("column_lanes.wgsl")
    )
}

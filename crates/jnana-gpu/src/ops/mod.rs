//! One op per file, its WGSL kernel beside it.

mod activation;
mod layer_norm;
mod linear;
mod softmax;

pub use activation::{activation, Activation};
pub use layer_norm::layer_norm;
pub use linear::linear;
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

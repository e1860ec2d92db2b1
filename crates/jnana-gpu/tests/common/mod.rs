//! Shared by the GPU tests.
#![allow(dead_code)]

/// The model crate's test helpers (fixtures, tiny bundles, test assets).
#[path = "../../../jnana/tests/common/mod.rs"]
pub mod model;

use candle_core::Tensor;
use jnana_gpu::Gpu;
use std::sync::OnceLock;

/// The adapter wgpu finds (here Mesa's lavapipe); no adapter fails the test, it is not skipped.
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        Gpu::new_blocking()
            .unwrap_or_else(|e| panic!("{e} (on Debian: apt-get install mesa-vulkan-drivers)"))
    })
}

pub fn max_abs_diff(a: &[f32], b: &Tensor) -> f32 {
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Devices tuned as a software adapter is (one thread per column, 4×4 blocks) and as a GPU is
/// with every split of a matrix-vector product (2 to 32 threads per column, tiles), so the
/// kernels a real GPU takes are tested on a software adapter too.
pub fn gpus_by_lanes() -> &'static [jnana_gpu::Gpu] {
    static GPUS: OnceLock<Vec<Gpu>> = OnceLock::new();
    GPUS.get_or_init(|| {
        [1, 2, 4, 8, 16, 32]
            .into_iter()
            .map(|l| {
                Gpu::new_blocking().unwrap().with_tuning(jnana_gpu::Tuning {
                    max_lanes: l,
                    tiles: l > 1,
                })
            })
            .collect()
    })
}

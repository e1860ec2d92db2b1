//! Each kernel against candle's CPU result on random inputs: the shapes the models use (Phi-2
//! 2560, CLIP 768, Whisper base 512/tiny 384) and odd sizes. Runs on whatever adapter wgpu finds
//! (here Mesa's lavapipe through Vulkan); no adapter is a failure, not a skip.

use candle_core::{Device, Tensor};
use jnana_gpu::ops::{self, Activation};
use jnana_gpu::Gpu;
use rand::{Rng, SeedableRng};
use std::sync::OnceLock;

fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        Gpu::new_blocking()
            .unwrap_or_else(|e| panic!("{e} (on Debian: apt-get install mesa-vulkan-drivers)"))
    })
}

fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

fn cpu(data: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(data, shape, &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &[f32], b: &Tensor) -> f32 {
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn the_device_gets_the_adapters_real_limits() {
    let g = gpu();
    eprintln!("{:?}", g.summary);
    assert!(!g.summary.name.is_empty());
    let got = g.device.limits();
    let offered = &g.adapter_limits;
    // wgpu's defaults would cap these at 128 MiB and 256 MiB.
    assert_eq!(
        got.max_storage_buffer_binding_size,
        offered.max_storage_buffer_binding_size
    );
    assert_eq!(got.max_buffer_size, offered.max_buffer_size);
    assert_eq!(
        got.max_compute_workgroup_storage_size,
        offered.max_compute_workgroup_storage_size
    );
    assert_eq!(
        g.summary.shader_f16,
        g.device.features().contains(wgpu::Features::SHADER_F16)
    );
}

#[test]
fn layer_norm_matches_candle() {
    let g = gpu();
    for (i, &(rows, cols)) in [(1, 2560), (50, 768), (3, 384), (7, 1), (2, 1000), (1, 300)]
        .iter()
        .enumerate()
    {
        let x = random(rows * cols, i as u64, 3.0);
        let w = random(cols, 100 + i as u64, 1.0);
        let b = random(cols, 200 + i as u64, 1.0);
        let reference = candle_nn::ops::layer_norm(
            &cpu(&x, &[rows, cols]),
            &cpu(&w, &[cols]),
            &cpu(&b, &[cols]),
            1e-5,
        )
        .unwrap();
        let y = ops::layer_norm(
            g,
            &g.upload(&x, &[rows, cols]).unwrap(),
            &g.upload(&w, &[cols]).unwrap(),
            Some(&g.upload(&b, &[cols]).unwrap()),
            1e-5,
        )
        .unwrap();
        let err = max_abs_diff(&g.read_blocking(&y).unwrap(), &reference);
        assert!(err <= 2e-5, "{rows}×{cols}: {err}");
    }
}

#[test]
fn activations_match_candle() {
    let g = gpu();
    for &n in &[1usize, 255, 257, 10_240, 70_001] {
        let x = random(n, n as u64, 6.0);
        let t = cpu(&x, &[n]);
        let gx = g.upload(&x, &[n]).unwrap();
        let quick = (&t * candle_nn::ops::sigmoid(&(&t * 1.702).unwrap()).unwrap()).unwrap();
        for (act, reference, tol) in [
            (Activation::GeluTanh, t.gelu().unwrap(), 1e-5),
            (Activation::GeluErf, t.gelu_erf().unwrap(), 2e-6 * 6.0),
            (Activation::QuickGelu, quick, 1e-5),
        ] {
            let y = ops::activation(g, &gx, act).unwrap();
            let err = max_abs_diff(&g.read_blocking(&y).unwrap(), &reference);
            assert!(err <= tol, "{act:?} n={n}: {err}");
        }
    }
}

#[test]
fn softmax_matches_candle() {
    let g = gpu();
    for (i, &(rows, cols)) in [(32, 50), (1, 51_200), (3, 1), (5, 1500)]
        .iter()
        .enumerate()
    {
        // Large logits: the row maximum must be subtracted first.
        let x = random(rows * cols, 10 + i as u64, 80.0);
        let reference = candle_nn::ops::softmax_last_dim(&cpu(&x, &[rows, cols])).unwrap();
        let y = ops::softmax_last_dim(g, &g.upload(&x, &[rows, cols]).unwrap()).unwrap();
        let got = g.read_blocking(&y).unwrap();
        let err = max_abs_diff(&got, &reference);
        assert!(err <= 1e-6, "{rows}×{cols}: {err}");
        assert!(got.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn linear_matches_candle() {
    let g = gpu();
    // (m, k, n): Phi-2 decode and prefill rows, CLIP, the projector, odd sizes.
    for (i, &(m, k, n, bias)) in [
        (1, 2560, 2560, true),
        (7, 2560, 300, true),
        (50, 768, 256, true),
        (49, 768, 2560, false),
        (3, 17, 5, true),
        (1, 1, 1, false),
        (33, 31, 65, true),
    ]
    .iter()
    .enumerate()
    {
        let x = random(m * k, 300 + i as u64, 1.0);
        let w = random(n * k, 400 + i as u64, 1.0);
        let b = random(n, 500 + i as u64, 1.0);
        let mut reference = cpu(&x, &[m, k])
            .matmul(&cpu(&w, &[n, k]).t().unwrap())
            .unwrap();
        if bias {
            reference = reference.broadcast_add(&cpu(&b, &[n])).unwrap();
        }
        let gb = g.upload(&b, &[n]).unwrap();
        let y = ops::linear(
            g,
            &g.upload(&x, &[m, k]).unwrap(),
            &g.upload(&w, &[n, k]).unwrap(),
            bias.then_some(&gb),
        )
        .unwrap();
        assert_eq!(y.shape(), &[m, n]);
        let err = max_abs_diff(&g.read_blocking(&y).unwrap(), &reference);
        // f32 sums of k products in another order.
        let tol = 1e-6 * k as f32 + 1e-6;
        assert!(err <= tol, "{m}×{k}·{n}: {err} > {tol}");
    }
}

#[test]
fn ops_queue_into_one_submission_and_chain() {
    // layer_norm → linear → gelu recorded back to back, read once: the result equals the same
    // chain on the CPU.
    let g = gpu();
    let (m, k, n) = (4, 64, 48);
    let x = random(m * k, 1, 2.0);
    let w = random(n * k, 2, 0.5);
    let ln_w = vec![1.0; k];
    let h = ops::layer_norm(
        g,
        &g.upload(&x, &[m, k]).unwrap(),
        &g.upload(&ln_w, &[k]).unwrap(),
        None,
        1e-5,
    )
    .unwrap();
    let h = ops::linear(g, &h, &g.upload(&w, &[n, k]).unwrap(), None).unwrap();
    let h = ops::activation(g, &h, Activation::GeluTanh).unwrap();
    let reference = candle_nn::ops::layer_norm(
        &cpu(&x, &[m, k]),
        &cpu(&ln_w, &[k]),
        &Tensor::zeros(k, candle_core::DType::F32, &Device::Cpu).unwrap(),
        1e-5,
    )
    .unwrap()
    .matmul(&cpu(&w, &[n, k]).t().unwrap())
    .unwrap()
    .gelu()
    .unwrap();
    let err = max_abs_diff(&g.read_blocking(&h).unwrap(), &reference);
    assert!(err <= 1e-4, "{err}");
}

#[test]
fn bad_shapes_and_oversized_tensors_are_refused_with_a_message() {
    let g = gpu();
    let x = g.upload(&[1.0; 6], &[2, 3]).unwrap();
    let w = g.upload(&[1.0; 8], &[2, 4]).unwrap();
    let e = ops::linear(g, &x, &w, None)
        .err()
        .expect("mismatched k")
        .to_string();
    assert!(e.contains("linear"), "{e}");
    let e = ops::layer_norm(g, &x, &w, None, 1e-5)
        .err()
        .expect("weight of the wrong size")
        .to_string();
    assert!(e.contains("weight"), "{e}");
    let e = g
        .upload(&[1.0; 5], &[2, 3])
        .err()
        .expect("wrong count")
        .to_string();
    assert!(e.contains("5 values"), "{e}");
    let too_many = (g.summary.max_storage_buffer_binding_size / 4 + 1) as usize;
    let e = g
        .zeros(&[too_many])
        .err()
        .expect("over the binding limit")
        .to_string();
    assert!(e.contains("binds at most"), "{e}");
}

//! Each kernel against candle's CPU result on random inputs: the shapes the models use (Phi-2
//! 2560, CLIP 768, Whisper base 512/tiny 384) and odd sizes. Runs on whatever adapter wgpu finds
//! (here Mesa's lavapipe through Vulkan); no adapter is a failure, not a skip.

mod common;
use common::{gpu, gpus_by_lanes, max_abs_diff};

use candle_core::{Device, Tensor};
use jnana::sampling::{self, Choice, Pick};
use jnana_gpu::ops::{self, Activation};
use rand::{Rng, SeedableRng};

fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

fn cpu(data: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(data, shape, &Device::Cpu).unwrap()
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
        // Every kernel choice: blocks or tiles for many rows, every split of k for few.
        for g in std::iter::once(g).chain(gpus_by_lanes()) {
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
fn repeated_steps_reuse_outputs_and_bind_groups_and_reused_outputs_start_zeroed() {
    // A device of its own: the counts are not shared with other tests.
    let g = jnana_gpu::Gpu::new_blocking().unwrap();
    let (m, k, n) = (3, 40, 24);
    let x = g.upload(&random(m * k, 5, 1.0), &[m, k]).unwrap();
    let w = g.upload(&random(n * k, 6, 0.5), &[n, k]).unwrap();
    let ln_w = g.upload(&vec![1.0; k], &[k]).unwrap();
    let step = || {
        let h = ops::layer_norm(&g, &x, &ln_w, None, 1e-5).unwrap();
        let h = ops::linear(&g, &h, &w, None).unwrap();
        let h = ops::activation(&g, &h, Activation::GeluTanh).unwrap();
        g.read_blocking(&h).unwrap()
    };
    let first = step();
    let after_first = g.pool_stats();
    for _ in 0..3 {
        assert_eq!(step(), first);
    }
    let after = g.pool_stats();
    assert_eq!(after.buffers_created, after_first.buffers_created);
    assert_eq!(after.bind_groups_created, after_first.bind_groups_created);
    assert!(
        after.buffers_reused >= after_first.buffers_reused + 9,
        "{after:?}"
    );
    assert!(
        after.bind_groups_reused >= after_first.bind_groups_reused + 9,
        "{after:?}"
    );

    // An output freed with values in it comes back zeroed.
    let filled = ops::add(&g, &x, &x).unwrap();
    assert!(g.read_blocking(&filled).unwrap().iter().any(|&v| v != 0.0));
    drop(filled);
    let reused = g.pool_stats().buffers_reused;
    let z = g.zeros(&[m, k]).unwrap();
    assert_eq!(g.pool_stats().buffers_reused, reused + 1);
    assert!(g.read_blocking(&z).unwrap().iter().all(|&v| v == 0.0));
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

#[test]
fn quantized_linear_matches_the_dequantized_reference() {
    use candle_core::quantized::{GgmlDType, QTensor};
    use jnana_gpu::ops::{GgmlBlocks, QMatrix};
    let g = gpu();
    // (m, k, n): Phi-2 decode and a prefill chunk, CLIP/Whisper widths, a k of one q4_K block.
    let shapes = [
        (1, 2560, 2560),
        (9, 2560, 96),
        (1, 768, 3072),
        (3, 256, 7),
        (17, 512, 40),
    ];
    for (dtype, blocks) in [
        (GgmlDType::Q8_0, GgmlBlocks::Q8_0),
        (GgmlDType::Q4_0, GgmlBlocks::Q4_0),
        (GgmlDType::Q4K, GgmlBlocks::Q4K),
    ] {
        for (i, &(m, k, n)) in shapes.iter().enumerate() {
            let x = random(m * k, 600 + i as u64, 1.0);
            let w = random(n * k, 700 + i as u64, 1.0);
            let b = random(n, 800 + i as u64, 1.0);
            let q = QTensor::quantize(&cpu(&w, &[n, k]), dtype).unwrap();
            let reference = cpu(&x, &[m, k])
                .matmul(&q.dequantize(&Device::Cpu).unwrap().t().unwrap())
                .unwrap()
                .broadcast_add(&cpu(&b, &[n]))
                .unwrap();
            // Every split of k a real GPU or a software adapter gets.
            for g in gpus_by_lanes() {
                let qm = QMatrix::upload(g, blocks, &q.data().unwrap(), n, k).unwrap();
                let y = ops::linear_q(
                    g,
                    &g.upload(&x, &[m, k]).unwrap(),
                    &qm,
                    Some(&g.upload(&b, &[n]).unwrap()),
                )
                .unwrap();
                assert_eq!(y.shape(), &[m, n]);
                let err = max_abs_diff(&g.read_blocking(&y).unwrap(), &reference);
                let tol = 1e-6 * k as f32 + 1e-6;
                assert!(err <= tol, "{blocks:?} {m}×{k}·{n}: {err} > {tol}");
            }
        }
    }
    // Bytes that are not whole blocks are refused.
    let e = QMatrix::upload(g, GgmlBlocks::Q4_0, &[0u8; 17], 1, 32)
        .err()
        .expect("short")
        .to_string();
    assert!(e.contains("17 bytes of Q4_0"), "{e}");
}

#[test]
fn a_quantized_matrix_over_the_binding_limit_is_split_by_rows() {
    use candle_core::quantized::{GgmlDType, QTensor};
    use jnana_gpu::ops::{GgmlBlocks, QMatrix};
    let g = gpu();
    let (m, k, n) = (3, 256, 45);
    let x = random(m * k, 901, 1.0);
    let b = random(n, 902, 1.0);
    let q = QTensor::quantize(&cpu(&random(n * k, 903, 1.0), &[n, k]), GgmlDType::Q8_0).unwrap();
    let reference = cpu(&x, &[m, k])
        .matmul(&q.dequantize(&Device::Cpu).unwrap().t().unwrap())
        .unwrap()
        .broadcast_add(&cpu(&b, &[n]))
        .unwrap();
    // A q8_0 row of 256 values is 8 groups × 32 bytes: 16 rows per 4 KiB part, so 45 rows make
    // parts of 16, 16 and 13.
    let data = q.data().unwrap();
    let split = QMatrix::upload_in_parts(g, GgmlBlocks::Q8_0, &data, n, k, 4096).unwrap();
    assert_eq!(split.parts(), 3);
    let y = ops::linear_q(
        g,
        &g.upload(&x, &[m, k]).unwrap(),
        &split,
        Some(&g.upload(&b, &[n]).unwrap()),
    )
    .unwrap();
    let err = max_abs_diff(&g.read_blocking(&y).unwrap(), &reference);
    assert!(err <= 1e-6 * k as f32, "split matrix: {err}");
    // A single row larger than a binding is refused with the sizes.
    let e = QMatrix::upload_in_parts(g, GgmlBlocks::Q8_0, &data, n, k, 100)
        .err()
        .expect("a row does not fit")
        .to_string();
    assert!(e.contains("256 bytes") && e.contains("at most 100"), "{e}");
}

#[test]
fn add_embedding_and_greedy_choice() {
    let g = gpu();
    let a = random(1000, 1, 1.0);
    let b = random(1000, 2, 1.0);
    let y = ops::add(
        g,
        &g.upload(&a, &[10, 100]).unwrap(),
        &g.upload(&b, &[10, 100]).unwrap(),
    )
    .unwrap();
    let got = g.read_blocking(&y).unwrap();
    assert!(got
        .iter()
        .zip(a.iter().zip(&b))
        .all(|(y, (a, b))| *y == a + b));

    let table = random(50 * 8, 3, 1.0);
    let ids = [3u32, 0, 49, 3];
    let y = ops::embedding(g, &g.upload(&table, &[50, 8]).unwrap(), &ids).unwrap();
    let got = g.read_blocking(&y).unwrap();
    for (r, &id) in ids.iter().enumerate() {
        assert_eq!(
            &got[r * 8..r * 8 + 8],
            &table[id as usize * 8..id as usize * 8 + 8]
        );
    }
    let e = ops::embedding(g, &g.upload(&table, &[50, 8]).unwrap(), &[50])
        .err()
        .expect("out of range")
        .to_string();
    assert!(e.contains("token id 50"), "{e}");

    // Greedy on the last row, with a tie (the lower index wins, as on the CPU).
    let mut logits = random(3 * 51_200, 4, 1.0);
    logits[2 * 51_200 + 777] = 9.0;
    logits[2 * 51_200 + 40_000] = 9.0;
    logits[10] = 20.0; // in an earlier row: ignored
    logits[2 * 51_200 + 51_000] = 30.0; // past the vocabulary limit: ignored
    let x = g.upload(&logits, &[3, 51_200]).unwrap();
    let greedy = |within| pollster::block_on(ops::choose_last_row(g, &x, &Choice::greedy(within)));
    assert_eq!(greedy(50_295).unwrap(), 777);
    assert_eq!(greedy(51_200).unwrap(), 51_000);
}

#[test]
fn choosing_a_token_on_the_gpu_follows_the_cpu_rules() {
    let g = gpu();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let picks = [
        // (temperature, top_k, top_p)
        (0.0, None, 1.0),
        (1.0, None, 1.0),
        (0.8, None, 0.9),
        (0.7, None, 0.5),
        (1.3, Some(40), 1.0),
        (0.9, Some(400), 0.8),
        (0.2, None, 0.95),
        (1.0, None, 0.05),
    ];
    let mut drawn_elsewhere = 0;
    for case in 0..32 {
        // Phi-2's padded vocabulary; peaked like a language model's (odd cases) or flat, where
        // the nucleus holds thousands of ids and the draw walks far.
        let mut logits = random(51_200, 100 + case, 2.0);
        let peak = if case % 2 == 1 { 10.0 } else { 3.0 };
        for _ in 0..20 {
            let at = rng.random_range(0..51_200);
            logits[at] += rng.random_range(0.0..peak);
        }
        let (temperature, top_k, top_p) = picks[case as usize % picks.len()];
        let penalized: Vec<u32> = (0..case % 5 * 10)
            .map(|_| rng.random_range(0..50_295))
            .collect();
        let mut penalized_unique = penalized.clone();
        penalized_unique.sort();
        penalized_unique.dedup();
        let choice = Choice {
            pick: if temperature == 0.0 {
                Pick::Greedy
            } else {
                Pick::Draw {
                    temperature,
                    top_k,
                    top_p,
                    u: rng.random_range(0.0..1.0),
                }
            },
            within: 50_295,
            penalty: if case % 3 == 0 { 1.0 } else { 1.3 },
            penalized: penalized_unique,
        };
        let x = g.upload(&logits, &[1, 51_200]).unwrap();
        let got = pollster::block_on(ops::choose_last_row(g, &x, &choice)).unwrap();
        drawn_elsewhere += usize::from(got != sampling::argmax(&logits[..50_295]));
        assert_eq!(
            got,
            sampling::choose(&logits, &choice),
            "case {case}: {choice:?}"
        );
    }
    // The draws really left the most likely id (the walk and the floors were exercised).
    assert!(drawn_elsewhere >= 10, "{drawn_elsewhere}");
}

#[test]
fn rotary_matches_candles_rope_on_part_of_each_head() {
    use jnana_gpu::ops::RotaryTables;
    let g = gpu();
    // Phi-2: 32 heads of 80, rotary on the first 32 dims, θ = 10 000.
    let (heads, head_dim, rot, seq, offset) = (4, 80, 32, 5, 1000);
    let tables = RotaryTables::new(g, rot, 10_000.0, 2048).unwrap();
    let x = random(seq * heads * head_dim, 9, 1.0);
    let y = ops::rotary(
        g,
        &g.upload(&x, &[seq, heads * head_dim]).unwrap(),
        &tables,
        heads,
        offset,
    )
    .unwrap();
    let got = g.read_blocking(&y).unwrap();
    // candle: [1, heads, seq, head_dim], rope on the first `rot` dims.
    let t = cpu(&x, &[seq, heads, head_dim])
        .transpose(0, 1)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let inv: Vec<f32> = (0..rot / 2)
        .map(|i| 1.0 / 10_000f32.powf((2 * i) as f32 / rot as f32))
        .collect();
    let pos = Tensor::arange(offset as u32, (offset + seq) as u32, &Device::Cpu)
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .reshape((seq, 1))
        .unwrap();
    let freqs = pos.matmul(&cpu(&inv, &[1, rot / 2])).unwrap();
    let rotated = candle_nn::rotary_emb::rope(
        &t.narrow(3, 0, rot).unwrap().contiguous().unwrap(),
        &freqs.cos().unwrap(),
        &freqs.sin().unwrap(),
    )
    .unwrap();
    let reference = Tensor::cat(&[&rotated, &t.narrow(3, rot, head_dim - rot).unwrap()], 3)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .transpose(0, 1)
        .unwrap()
        .contiguous()
        .unwrap();
    let err = max_abs_diff(&got, &reference);
    assert!(err <= 1e-5, "{err}");
    let e = ops::rotary(
        g,
        &g.upload(&x, &[seq, heads * head_dim]).unwrap(),
        &tables,
        heads,
        2046,
    )
    .err()
    .expect("past the table")
    .to_string();
    assert!(e.contains("rotary"), "{e}");
}

/// softmax(q·kᵀ/√d [+ causal mask])·v on the CPU, per head.
#[allow(clippy::too_many_arguments)]
fn attention_reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    seq: usize,
    len: usize,
    heads: usize,
    kv_heads: usize,
    hd: usize,
    causal: bool,
) -> Tensor {
    let qt = cpu(q, &[seq, heads, hd])
        .transpose(0, 1)
        .unwrap()
        .contiguous()
        .unwrap();
    let kt = cpu(k, &[len, kv_heads, hd])
        .transpose(0, 1)
        .unwrap()
        .contiguous()
        .unwrap();
    let vt = cpu(v, &[len, kv_heads, hd])
        .transpose(0, 1)
        .unwrap()
        .contiguous()
        .unwrap();
    let rep = heads / kv_heads;
    let kt = Tensor::cat(&vec![&kt; rep], 1)
        .unwrap()
        .reshape((heads, len, hd))
        .unwrap();
    let vt = Tensor::cat(&vec![&vt; rep], 1)
        .unwrap()
        .reshape((heads, len, hd))
        .unwrap();
    let mut scores = (qt.matmul(&kt.t().unwrap()).unwrap() / (hd as f64).sqrt()).unwrap();
    if causal {
        let mask: Vec<f32> = (0..seq)
            .flat_map(|i| {
                (0..len).map(move |j| {
                    if j <= len - seq + i {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
            })
            .collect();
        scores = scores.broadcast_add(&cpu(&mask, &[seq, len])).unwrap();
    }
    let p = candle_nn::ops::softmax_last_dim(&scores).unwrap();
    p.matmul(&vt)
        .unwrap()
        .transpose(0, 1)
        .unwrap()
        .contiguous()
        .unwrap()
}

#[test]
fn attention_with_a_kv_cache_matches_the_reference() {
    use jnana_gpu::ops::KvCache;
    let g = gpu();
    let (heads, hd) = (4, 80);
    let w = heads * hd;
    let mut cache = KvCache::new(g, 64, w).unwrap();
    let mut all_k = Vec::new();
    let mut all_v = Vec::new();
    // Prefill 7 positions, then decode 3 one at a time: each step attends over everything so far.
    for (step, seq) in [7usize, 1, 1, 1].into_iter().enumerate() {
        let q = random(seq * w, 20 + step as u64, 1.0);
        let k = random(seq * w, 30 + step as u64, 1.0);
        let v = random(seq * w, 40 + step as u64, 1.0);
        all_k.extend_from_slice(&k);
        all_v.extend_from_slice(&v);
        cache
            .append(
                g,
                &g.upload(&k, &[seq, w]).unwrap(),
                &g.upload(&v, &[seq, w]).unwrap(),
            )
            .unwrap();
        let y = ops::attention(
            g,
            &g.upload(&q, &[seq, w]).unwrap(),
            &cache.k,
            &cache.v,
            cache.len(),
            heads,
            heads,
            true,
        )
        .unwrap();
        let reference =
            attention_reference(&q, &all_k, &all_v, seq, cache.len(), heads, heads, hd, true);
        let err = max_abs_diff(&g.read_blocking(&y).unwrap(), &reference);
        assert!(err <= 1e-5, "step {step}: {err}");
    }
    // Without a cache: full attention (encoders) over a long key store with grouped key/value
    // heads, and one query over many keys (decode steps deep in a conversation, Whisper's
    // cross-attention), key counts no multiple of the workgroup.
    for (seq, len, heads, kv_heads, hd, causal, seed) in [
        (50, 1500, 8, 2, 64, false, 50),
        (1, 65, 4, 4, 80, true, 125),
        (1, 300, 8, 2, 80, true, 360),
        (1, 1500, 8, 8, 64, false, 1560),
    ] {
        let q = random(seq * heads * hd, seed, 1.0);
        let k = random(len * kv_heads * hd, seed + 1, 1.0);
        let v = random(len * kv_heads * hd, seed + 2, 1.0);
        let y = ops::attention(
            g,
            &g.upload(&q, &[seq, heads * hd]).unwrap(),
            &g.upload(&k, &[len, kv_heads * hd]).unwrap(),
            &g.upload(&v, &[len, kv_heads * hd]).unwrap(),
            len,
            heads,
            kv_heads,
            causal,
        )
        .unwrap();
        let reference = attention_reference(&q, &k, &v, seq, len, heads, kv_heads, hd, causal);
        let err = max_abs_diff(&g.read_blocking(&y).unwrap(), &reference);
        assert!(err <= 1e-5, "{seq} queries over {len} keys: {err}");
    }
    // Past the cache's size.
    let big = g.upload(&random(60 * w, 1, 1.0), &[60, w]).unwrap();
    let e = cache
        .append(g, &big, &big)
        .expect_err("overflow")
        .to_string();
    assert!(e.contains("kv cache"), "{e}");
}

#[test]
fn a_lost_device_fails_the_next_read_with_a_message_instead_of_crashing() {
    // Its own device: the test destroys it.
    let g = jnana_gpu::Gpu::new_blocking().unwrap();
    let x = g.upload(&[1.0, 2.0], &[2]).unwrap();
    assert_eq!(
        g.read_blocking(&ops::add(&g, &x, &x).unwrap()).unwrap(),
        [2.0, 4.0]
    );
    g.device.destroy();
    let e = ops::add(&g, &x, &x)
        .and_then(|y| g.read_blocking(&y))
        .expect_err("a destroyed device computes nothing")
        .to_string();
    assert!(e.contains("GPU failed") && e.contains("lost"), "{e}");
    assert!(g.check().is_err(), "the fault stays reported");
}

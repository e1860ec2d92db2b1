// LayerNorm over the last dimension: one workgroup per row (row_reduce.wgsl is prepended).

struct Params { rows: u32, cols: u32, eps: f32, has_bias: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = row_index(wg, nwg);
    if (row >= p.rows) { return; }
    let t = lid.x;
    let base = row * p.cols;
    var s = 0.0;
    for (var i = t; i < p.cols; i = i + WG) { s = s + x[base + i]; }
    let mean = reduce_sum(t, s) / f32(p.cols);
    var v = 0.0;
    for (var i = t; i < p.cols; i = i + WG) { let d = x[base + i] - mean; v = v + d * d; }
    let inv = inverseSqrt(reduce_sum(t, v) / f32(p.cols) + p.eps);
    for (var i = t; i < p.cols; i = i + WG) {
        var o = (x[base + i] - mean) * inv * weight[i];
        if (p.has_bias != 0u) { o = o + bias[i]; }
        y[base + i] = o;
    }
}

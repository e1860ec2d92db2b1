// Softmax over the last dimension: one workgroup per row, max then sum of exponentials
// (row_reduce.wgsl is prepended).

struct Params { rows: u32, cols: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = row_index(wg, nwg);
    if (row >= p.rows) { return; }
    let t = lid.x;
    let base = row * p.cols;
    var m = -3.402823e38;
    for (var i = t; i < p.cols; i = i + WG) { m = max(m, x[base + i]); }
    m = reduce_max(t, m);
    var sum = 0.0;
    for (var i = t; i < p.cols; i = i + WG) { sum = sum + exp(x[base + i] - m); }
    let total = reduce_sum(t, sum);
    let inv = 1.0 / total;
    for (var i = t; i < p.cols; i = i + WG) { y[base + i] = exp(x[base + i] - m) * inv; }
}

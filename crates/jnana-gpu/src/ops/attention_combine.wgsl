// Split-key attention, second half: merges a head's slices from attention_split.wgsl, each
// rescaled from its own maximum to the head's, into the softmax-weighted output.

struct Params { seq: u32, len: u32, heads: u32, kv_heads: u32, head_dim: u32, causal: u32, scale: f32, chunk: u32 }

@group(0) @binding(0) var<storage, read> part: array<f32>;  // [heads, slices, 2 + head_dim]
@group(0) @binding(1) var<storage, read_write> y: array<f32>;  // [1, heads * head_dim]
@group(0) @binding(2) var<uniform> p: Params;

const WG: u32 = 64u;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let h = wg.x;
    let t = lid.x;
    let slices = (p.len + p.chunk - 1u) / p.chunk;
    let stride = p.head_dim + 2u;
    let head = h * slices * stride;
    var m = -3.402823e38;
    for (var s = 0u; s < slices; s = s + 1u) { m = max(m, part[head + s * stride]); }
    var l = 0.0;
    for (var s = 0u; s < slices; s = s + 1u) {
        l = l + part[head + s * stride + 1u] * exp(part[head + s * stride] - m);
    }
    for (var d = t; d < p.head_dim; d = d + WG) {
        var o = 0.0;
        for (var s = 0u; s < slices; s = s + 1u) {
            o = o + part[head + s * stride + 2u + d] * exp(part[head + s * stride] - m);
        }
        y[h * p.head_dim + d] = o / l;
    }
}

// Split-key ("flash-decoding") attention of one query row, first half: workgroup (slice s,
// head h) scores keys s·CHUNK .. (s + 1)·CHUNK and writes the slice's maximum score, its sum of
// exp(score − max) and its unnormalized output Σ exp(score − max)·v. A decode step then keeps
// the GPU busy with heads × slices workgroups however long the context, where one workgroup per
// head walks every key in turn; attention_combine.wgsl merges the slices.

struct Params { seq: u32, len: u32, heads: u32, kv_heads: u32, head_dim: u32, causal: u32, scale: f32, chunk: u32 }

@group(0) @binding(0) var<storage, read> q: array<f32>;  // [1, heads * head_dim]
@group(0) @binding(1) var<storage, read> k: array<f32>;  // [≥ len, kv_heads * head_dim]
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> part: array<f32>;  // [heads, slices, 2 + head_dim]
@group(0) @binding(4) var<uniform> p: Params;

const WG: u32 = 64u;  // = p.chunk, the slice length: a thread per key
var<workgroup> weights: array<f32, WG>;
var<workgroup> red: array<f32, WG>;

fn reduce(t: u32, v: f32, take_max: bool) -> f32 {
    red[t] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (t < s) {
            if (take_max) { red[t] = max(red[t], red[t + s]); } else { red[t] = red[t] + red[t + s]; }
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let s = wg.x;
    let h = wg.y;
    let t = lid.x;
    let slices = (p.len + p.chunk - 1u) / p.chunk;
    let kh = h / (p.heads / p.kv_heads);
    let kw = p.kv_heads * p.head_dim;
    let qb = h * p.head_dim;
    let first = s * WG;
    let n = min(WG, p.len - first);
    var score = -3.402823e38;
    if (t < n) {
        let kb = (first + t) * kw + kh * p.head_dim;
        var acc = 0.0;
        for (var d = 0u; d < p.head_dim; d = d + 1u) { acc = acc + q[qb + d] * k[kb + d]; }
        score = acc * p.scale;
    }
    let m = reduce(t, score, true);
    var e = 0.0;
    if (t < n) { e = exp(score - m); }
    weights[t] = e;
    // The reduction's barriers also publish `weights` to the whole workgroup.
    let l = reduce(t, e, false);
    let base = (h * slices + s) * (p.head_dim + 2u);
    for (var d = t; d < p.head_dim; d = d + WG) {
        var o = 0.0;
        for (var j = 0u; j < n; j = j + 1u) { o = o + weights[j] * v[(first + j) * kw + kh * p.head_dim + d]; }
        part[base + 2u + d] = o;
    }
    if (t == 0u) {
        part[base] = m;
        part[base + 1u] = l;
    }
}

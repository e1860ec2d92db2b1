// Scaled dot-product attention of `seq` queries over the first `len` rows of a key/value
// store (a KV cache, or an encoder's output for cross-attention). Causal: query i sits at
// position len − seq + i and sees keys up to it. One workgroup per (query, head).
// Needs len ≤ MAX_T (the scores of one query stay in workgroup memory).

struct Params { seq: u32, len: u32, heads: u32, kv_heads: u32, head_dim: u32, causal: u32, scale: f32 }

@group(0) @binding(0) var<storage, read> q: array<f32>;  // [seq, heads * head_dim]
@group(0) @binding(1) var<storage, read> k: array<f32>;  // [≥ len, kv_heads * head_dim]
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;  // [seq, heads * head_dim]
@group(0) @binding(4) var<uniform> p: Params;

const WG: u32 = 64u;
const MAX_T: u32 = 2048u;
var<workgroup> scores: array<f32, MAX_T>;
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
    let i = wg.x;       // query
    let h = wg.y;       // head
    let t = lid.x;
    let kh = h / (p.heads / p.kv_heads);
    let qw = p.heads * p.head_dim;
    let kw = p.kv_heads * p.head_dim;
    var visible = p.len;
    if (p.causal != 0u) { visible = p.len - p.seq + i + 1u; }
    let qb = i * qw + h * p.head_dim;
    var m = -3.402823e38;
    for (var j = t; j < visible; j = j + WG) {
        let kb = j * kw + kh * p.head_dim;
        var s = 0.0;
        for (var d = 0u; d < p.head_dim; d = d + 1u) { s = s + q[qb + d] * k[kb + d]; }
        s = s * p.scale;
        scores[j] = s;
        m = max(m, s);
    }
    m = reduce(t, m, true);
    var sum = 0.0;
    for (var j = t; j < visible; j = j + WG) {
        let e = exp(scores[j] - m);
        scores[j] = e;
        sum = sum + e;
    }
    sum = reduce(t, sum, false);
    for (var d = t; d < p.head_dim; d = d + WG) {
        var o = 0.0;
        for (var j = 0u; j < visible; j = j + 1u) { o = o + scores[j] * v[j * kw + kh * p.head_dim + d]; }
        y[qb + d] = o / sum;
    }
}

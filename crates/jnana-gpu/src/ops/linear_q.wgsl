// y[m, n] = sum_k x[m, k] * W[n, k] (+ b[n]) with W block-quantized in groups of 32 along k:
// W = scale * q - min per group. `BITS` (prepended) is 4 (q4_0, q4_K: 8 nibbles a word) or 8
// (q8_0: 4 signed bytes a word). One workgroup per output column and up to 8 rows; each thread
// unpacks a group once and uses it for every row.

struct Params { m: u32, n: u32, k: u32, has_bias: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> qs: array<u32>;
@group(0) @binding(2) var<storage, read> scale_min: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

const WG: u32 = 64u;
const ROWS: u32 = 8u;
const WORDS: u32 = BITS * 32u / 32u;  // words per group of 32 values
var<workgroup> partial: array<array<f32, 8>, 64>;

fn value(word: u32, i: u32) -> f32 {
    if (BITS == 4u) {
        return f32(extractBits(word, i * 4u, 4u));
    }
    return f32(extractBits(i32(word), i * 8u, 8u));
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let col = wg.x;
    let row0 = wg.y * ROWS;
    let t = lid.x;
    let groups = p.k / 32u;
    var acc = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (var g = t; g < groups; g = g + WG) {
        let gi = col * groups + g;
        let sm = scale_min[gi];
        var w: array<f32, 32>;
        let per = 32u / BITS;
        for (var j = 0u; j < WORDS; j = j + 1u) {
            let word = qs[gi * WORDS + j];
            for (var i = 0u; i < per; i = i + 1u) {
                w[j * per + i] = sm.x * value(word, i) - sm.y;
            }
        }
        for (var r = 0u; r < ROWS; r = r + 1u) {
            let row = row0 + r;
            if (row < p.m) {
                let base = row * p.k + g * 32u;
                var s = 0.0;
                for (var i = 0u; i < 32u; i = i + 1u) { s = s + x[base + i] * w[i]; }
                acc[r] = acc[r] + s;
            }
        }
    }
    for (var r = 0u; r < ROWS; r = r + 1u) { partial[t][r] = acc[r]; }
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (t < s) {
            for (var r = 0u; r < ROWS; r = r + 1u) { partial[t][r] = partial[t][r] + partial[t + s][r]; }
        }
        workgroupBarrier();
    }
    if (t < ROWS) {
        let row = row0 + t;
        if (row < p.m && col < p.n) {
            var o = partial[0][t];
            if (p.has_bias != 0u) { o = o + b[col]; }
            y[row * p.n + col] = o;
        }
    }
}

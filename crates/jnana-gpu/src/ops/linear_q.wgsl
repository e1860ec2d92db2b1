// y[m, n] = sum_k x[m, k] * W[n, k] (+ b[n]) with W block-quantized in groups of 32 along k:
// W = scale * q - min per group. `BITS` (prepended) is 4 (q4_0, q4_K: 8 nibbles a word) or 8
// (q8_0: 4 signed bytes a word). `LANES` (prepended, a power of two ≤ 64) threads share one
// output column, so a workgroup covers 64 / LANES columns and up to 8 rows: short rows (small
// k) keep every thread busy, long ones split k across the lanes.

// n counts this part's columns; the output row holds `stride` columns, this part's from `col0`.
struct Params { m: u32, n: u32, k: u32, has_bias: u32, stride: u32, col0: u32, _a: u32, _b: u32 }

@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> qs: array<u32>;
@group(0) @binding(2) var<storage, read> scale_min: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

const WG: u32 = 64u;
const COLS: u32 = WG / LANES;
const ROWS: u32 = 8u;
const WORDS: u32 = BITS * 32u / 32u;  // words per group of 32 values

// The i-th four quantized values of a word (i = 0 or 1 for 4-bit words, 0 for 8-bit ones).
fn four(word: u32, i: u32) -> vec4<f32> {
    if (BITS == 4u) {
        let w = word >> (16u * i);
        return vec4<f32>(f32(w & 15u), f32((w >> 4u) & 15u), f32((w >> 8u) & 15u), f32((w >> 12u) & 15u));
    }
    let s = i32(word);
    return vec4<f32>(f32(extractBits(s, 0u, 8u)), f32(extractBits(s, 8u, 8u)),
                     f32(extractBits(s, 16u, 8u)), f32(extractBits(s, 24u, 8u)));
}

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let t = lid.x;
    let lane = t % LANES;
    // Columns run along x, and on along z past the 65 535-workgroup limit.
    let col = (wg.x + wg.z * nwg.x) * COLS + t / LANES;
    let row0 = wg.y * ROWS;
    let groups = p.k / 32u;
    let rows = min(ROWS, p.m - row0);
    // Rows outside, groups inside: a decode step (one row) unpacks each group once, and no
    // private array needs run-time indexing (slow on CPU-emulated GPUs).
    for (var r = 0u; r < rows; r = r + 1u) {
        var acc = 0.0;
        if (col < p.n) {
            for (var g = lane; g < groups; g = g + LANES) {
                let gi = col * groups + g;
                let sm = scale_min[gi];
                let base = ((row0 + r) * p.k + g * 32u) / 4u;
                // sum x·(scale·q − min) = scale·(x·q) − min·sum(x), four values at a time.
                var xq = 0.0;
                var xs = vec4<f32>(0.0);
                for (var j = 0u; j < WORDS; j = j + 1u) {
                    let word = qs[gi * WORDS + j];
                    if (BITS == 4u) {
                        let x0 = x[base + 2u * j];
                        let x1 = x[base + 2u * j + 1u];
                        xq = xq + dot(x0, four(word, 0u)) + dot(x1, four(word, 1u));
                        xs = xs + x0 + x1;
                    } else {
                        let x0 = x[base + j];
                        xq = xq + dot(x0, four(word, 0u));
                        xs = xs + x0;
                    }
                }
                acc = acc + sm.x * xq - sm.y * (xs.x + xs.y + xs.z + xs.w);
            }
        }
        lane_sums[t][r] = acc;
    }
    sum_lanes(t, lane, rows);
    if (lane == 0u && col < p.n) {
        var bias = 0.0;
        if (p.has_bias != 0u) { bias = b[p.col0 + col]; }
        for (var r = 0u; r < rows; r = r + 1u) {
            y[(row0 + r) * p.stride + p.col0 + col] = lane_sums[t][r] + bias;
        }
    }
}

// The next token from the last row of the logits, chosen as jnana::sampling defines it: repeat
// penalty, then greedy, or softmax at a temperature cut by top-k and top-p and drawn with the
// CPU's random number. One workgroup; only the chosen id is read back.
//
// Needs row_reduce.wgsl in front. Each thread owns a contiguous chunk of ids, so the final draw
// walks chunks in id order. Top-k and top-p floors are found by bisection on the bits of a
// probability (non-negative floats order like their bits): no sort.

struct Params {
    n: u32,
    offset: u32,
    greedy: u32,
    n_penalized: u32,
    temperature: f32,
    top_p: f32,
    top_k: u32,
    u: f32,
    penalty: f32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> penalized: array<u32>;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;
@group(0) @binding(4) var<uniform> p: Params;

const ONE_BITS: u32 = 0x3f800000u;
// Per thread: its best id (greedy) or its last kept id (draw).
var<workgroup> ids: array<u32, WG>;

// Over this thread's chunk: how many probabilities exceed `floor` (as_count) or their mass.
fn above(lo: u32, hi: u32, floor: f32, as_count: bool) -> f32 {
    var acc = 0.0;
    for (var i = lo; i < hi; i = i + 1u) {
        if (x[i] > floor) { acc = acc + select(x[i], 1.0, as_count); }
    }
    return acc;
}

// The least probability with less than `limit` (ids or mass) strictly above it.
fn floor_below(t: u32, lo: u32, hi: u32, limit: f32, as_count: bool) -> f32 {
    if (reduce_sum(t, above(lo, hi, 0.0, as_count)) < limit) { return 0.0; }
    var a = 0u;
    var b = ONE_BITS;
    for (var it = 0u; it < 31u; it = it + 1u) {
        let mid = a + (b - a) / 2u;
        if (reduce_sum(t, above(lo, hi, bitcast<f32>(mid), as_count)) < limit) { b = mid; } else { a = mid; }
    }
    return bitcast<f32>(b);
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_id) lid: vec3<u32>) {
    let t = lid.x;
    let chunk = (p.n + WG - 1u) / WG;
    let lo = min(t * chunk, p.n);
    let hi = min(lo + chunk, p.n);
    for (var i = lo; i < hi; i = i + 1u) { x[i] = logits[p.offset + i]; }
    storageBarrier();
    for (var j = t; j < p.n_penalized; j = j + WG) {
        let id = penalized[j];
        if (id < p.n) {
            let l = x[id];
            x[id] = select(l * p.penalty, l / p.penalty, l >= 0.0);
        }
    }
    storageBarrier();

    if (p.greedy == 1u) {
        var bv = -3.402823e38;
        var bi = 0xffffffffu;
        for (var i = lo; i < hi; i = i + 1u) {
            if (x[i] > bv) { bv = x[i]; bi = i; }
        }
        partial[t] = bv;
        ids[t] = bi;
        workgroupBarrier();
        for (var s = WG / 2u; s > 0u; s = s / 2u) {
            if (t < s) {
                let ov = partial[t + s];
                let oi = ids[t + s];
                if (ov > partial[t] || (ov == partial[t] && oi < ids[t])) { partial[t] = ov; ids[t] = oi; }
            }
            workgroupBarrier();
        }
        if (t == 0u) { out[0] = ids[0]; }
        return;
    }

    var m = -3.402823e38;
    for (var i = lo; i < hi; i = i + 1u) { m = max(m, x[i] / p.temperature); }
    m = reduce_max(t, m);
    var e = 0.0;
    for (var i = lo; i < hi; i = i + 1u) {
        x[i] = exp(x[i] / p.temperature - m);
        e = e + x[i];
    }
    let total_e = reduce_sum(t, e);
    for (var i = lo; i < hi; i = i + 1u) { x[i] = x[i] / total_e; }
    storageBarrier();

    var floor = 0.0;
    if (p.top_k > 0u && p.top_k < p.n) {
        floor = floor_below(t, lo, hi, f32(p.top_k), true);
    }
    if (p.top_p < 1.0) {
        floor = max(floor, floor_below(t, lo, hi, p.top_p, false));
    }

    var kept = 0.0;
    var last_kept = 0u;
    for (var i = lo; i < hi; i = i + 1u) {
        if (x[i] >= floor && x[i] > 0.0) { kept = kept + x[i]; last_kept = i; }
    }
    partial[t] = kept;
    ids[t] = last_kept;
    workgroupBarrier();
    if (t == 0u) {
        var total = 0.0;
        var last = 0u;
        for (var c = 0u; c < WG; c = c + 1u) {
            total = total + partial[c];
            last = max(last, ids[c]);
        }
        let target_mass = p.u * total;
        // Whole chunks below the target are skipped; the one it falls in is walked id by id.
        var sum = 0.0;
        var chosen = last;
        var found = false;
        for (var c = 0u; c < WG && !found; c = c + 1u) {
            if (sum + partial[c] <= target_mass) {
                sum = sum + partial[c];
                continue;
            }
            for (var i = c * chunk; i < min(c * chunk + chunk, p.n); i = i + 1u) {
                if (x[i] >= floor && x[i] > 0.0) {
                    sum = sum + x[i];
                    if (sum > target_mass) { chosen = i; found = true; break; }
                }
            }
        }
        out[0] = chosen;
    }
}

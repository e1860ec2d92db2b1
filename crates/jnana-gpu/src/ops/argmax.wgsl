// The index of the largest value of a row (greedy decoding reads back one u32, not the logits).
// The lowest index wins a tie, as on the CPU.

struct Params { n: u32, offset: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
@group(0) @binding(2) var<uniform> p: Params;

const WG: u32 = 256u;
var<workgroup> best_v: array<f32, WG>;
var<workgroup> best_i: array<u32, WG>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_id) lid: vec3<u32>) {
    let t = lid.x;
    var bv = -3.402823e38;
    var bi = 0xffffffffu;
    for (var i = t; i < p.n; i = i + WG) {
        let xv = x[p.offset + i];
        if (xv > bv) { bv = xv; bi = i; }
    }
    best_v[t] = bv;
    best_i[t] = bi;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (t < s) {
            let ov = best_v[t + s];
            let oi = best_i[t + s];
            if (ov > best_v[t] || (ov == best_v[t] && oi < best_i[t])) { best_v[t] = ov; best_i[t] = oi; }
        }
        workgroupBarrier();
    }
    if (t == 0u) { out[0] = best_i[0]; }
}

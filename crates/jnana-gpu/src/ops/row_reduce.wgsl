// Shared by the row kernels (one workgroup per row of the last dimension): workgroup-wide sum
// and max of one value per thread. Results are uniform (a kernel may branch on them around
// barriers).

const WG: u32 = 256u;
var<workgroup> partial: array<f32, WG>;

fn row_index(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.x + wg.y * nwg.x;
}

fn reduce_sum(t: u32, v: f32) -> f32 {
    partial[t] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (t < s) { partial[t] = partial[t] + partial[t + s]; }
        workgroupBarrier();
    }
    let total = workgroupUniformLoad(&partial[0]);
    workgroupBarrier();
    return total;
}

fn reduce_max(t: u32, v: f32) -> f32 {
    partial[t] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (t < s) { partial[t] = max(partial[t], partial[t + s]); }
        workgroupBarrier();
    }
    let total = workgroupUniformLoad(&partial[0]);
    workgroupBarrier();
    return total;
}

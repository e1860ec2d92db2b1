// y[m, n] = sum_k x[m, k] * w[n, k] + b[n] — a Linear layer with PyTorch's [out, in] weight,
// in 16×16 output tiles that stage 16-wide slices of x and w in shared memory.

struct Params { m: u32, n: u32, k: u32, has_bias: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

const T: u32 = 16u;
var<workgroup> xs: array<array<f32, 16>, 16>;
var<workgroup> ws: array<array<f32, 16>, 16>;

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wg.y * T + lid.y;   // in m
    let col = wg.x * T + lid.x;   // in n
    let wrow = wg.x * T + lid.y;  // the weight row this thread stages
    var acc = 0.0;
    for (var k0 = 0u; k0 < p.k; k0 = k0 + T) {
        let kx = k0 + lid.x;
        xs[lid.y][lid.x] = select(0.0, x[row * p.k + kx], row < p.m && kx < p.k);
        ws[lid.y][lid.x] = select(0.0, w[wrow * p.k + kx], wrow < p.n && kx < p.k);
        workgroupBarrier();
        for (var j = 0u; j < T; j = j + 1u) {
            acc = acc + xs[lid.y][j] * ws[lid.x][j];
        }
        workgroupBarrier();
    }
    if (row < p.m && col < p.n) {
        if (p.has_bias != 0u) { acc = acc + b[col]; }
        y[row * p.n + col] = acc;
    }
}

// Few rows (a decode step): `LANES` (prepended) threads per output column, 64 / LANES columns
// and up to 8 rows per workgroup, each lane summing every LANES-th product along k (adjacent
// lanes read adjacent weights).
var<workgroup> part: array<array<f32, 8>, 64>;

@compute @workgroup_size(64)
fn narrow(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let t = lid.x;
    let lane = t % LANES;
    let col = (wg.x + wg.z * nwg.x) * (64u / LANES) + t / LANES;
    let row0 = wg.y * 8u;
    let rows = min(8u, p.m - row0);
    for (var r = 0u; r < rows; r = r + 1u) {
        var acc = 0.0;
        if (col < p.n) {
            let xb = (row0 + r) * p.k;
            let wb = col * p.k;
            for (var i = lane; i < p.k; i = i + LANES) { acc = acc + x[xb + i] * w[wb + i]; }
        }
        part[t][r] = acc;
    }
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s = s / 2u) {
        if (lane < s) {
            for (var r = 0u; r < rows; r = r + 1u) { part[t][r] = part[t][r] + part[t + s][r]; }
        }
        workgroupBarrier();
    }
    if (lane == 0u && col < p.n) {
        var bias = 0.0;
        if (p.has_bias != 0u) { bias = b[col]; }
        for (var r = 0u; r < rows; r = r + 1u) { y[(row0 + r) * p.n + col] = part[t][r] + bias; }
    }
}

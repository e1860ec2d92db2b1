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
        lane_sums[t][r] = acc;
    }
    sum_lanes(t, lane, rows);
    if (lane == 0u && col < p.n) {
        var bias = 0.0;
        if (p.has_bias != 0u) { bias = b[col]; }
        for (var r = 0u; r < rows; r = r + 1u) { y[(row0 + r) * p.n + col] = lane_sums[t][r] + bias; }
    }
}

// Many rows on a software adapter (lavapipe, SwiftShader): workgroup barriers are costly there
// and CPU caches do the staging, so each thread computes a 4×4 output block straight from
// memory.
@compute @workgroup_size(64)
fn blocked(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let col_blocks = (p.n + 3u) / 4u;
    let index = gid.x + gid.y * nwg.x * 64u;
    let r0 = (index / col_blocks) * 4u;
    let c0 = (index % col_blocks) * 4u;
    if (r0 >= p.m) { return; }
    // Rows and columns past the edge read the last one (in bounds) and are not written.
    let xr = vec4<u32>(min(r0, p.m - 1u), min(r0 + 1u, p.m - 1u), min(r0 + 2u, p.m - 1u), min(r0 + 3u, p.m - 1u)) * p.k;
    let wr = vec4<u32>(min(c0, p.n - 1u), min(c0 + 1u, p.n - 1u), min(c0 + 2u, p.n - 1u), min(c0 + 3u, p.n - 1u)) * p.k;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var i = 0u; i < p.k; i = i + 1u) {
        let wv = vec4<f32>(w[wr.x + i], w[wr.y + i], w[wr.z + i], w[wr.w + i]);
        a0 = a0 + x[xr.x + i] * wv;
        a1 = a1 + x[xr.y + i] * wv;
        a2 = a2 + x[xr.z + i] * wv;
        a3 = a3 + x[xr.w + i] * wv;
    }
    var bias = vec4<f32>(0.0);
    if (p.has_bias != 0u) {
        bias = vec4<f32>(b[wr.x / p.k], b[wr.y / p.k], b[wr.z / p.k], b[wr.w / p.k]);
    }
    let rows = array<vec4<f32>, 4>(a0 + bias, a1 + bias, a2 + bias, a3 + bias);
    for (var r = 0u; r < 4u; r = r + 1u) {
        if (r0 + r < p.m) {
            for (var c = 0u; c < 4u; c = c + 1u) {
                if (c0 + c < p.n) { y[(r0 + r) * p.n + c0 + c] = rows[r][c]; }
            }
        }
    }
}

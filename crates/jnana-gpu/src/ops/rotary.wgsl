// Rotary position embedding on the first `rot` dims of every head ("rotate half", as HF's
// Phi-2 and candle's `rope`); the rest of each head passes through. cos/sin come from a table
// computed on the CPU: WGSL's sin/cos are only accurate near [-π, π].

struct Params { seq: u32, heads: u32, head_dim: u32, rot: u32, offset: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;      // [seq, heads * head_dim]
@group(0) @binding(1) var<storage, read> cos_t: array<f32>;  // [positions, rot / 2]
@group(0) @binding(2) var<storage, read> sin_t: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.seq * p.heads * p.head_dim) { return; }
    let d = i % p.head_dim;
    let s = i / (p.heads * p.head_dim);
    if (d >= p.rot) { y[i] = x[i]; return; }
    let half = p.rot / 2u;
    let j = d % half;
    let c = cos_t[(p.offset + s) * half + j];
    let sn = sin_t[(p.offset + s) * half + j];
    if (d < half) {
        y[i] = x[i] * c - x[i + half] * sn;
    } else {
        y[i] = x[i] * c + x[i - half] * sn;
    }
}

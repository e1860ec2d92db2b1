// Unfolds a 1-D convolution's input windows into rows, so the convolution becomes one matrix
// product: y[t, c · kernel + j] = x[t · stride + j - pad, c] (zero outside the signal).
// x is time-major ([len, channels]), as the rows the rest of the engine uses.

struct Params {
    len: u32,
    channels: u32,
    kernel: u32,
    stride: u32,
    pad: u32,
    out_len: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(256)
fn unfold(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    let width = p.channels * p.kernel;
    if (i >= p.out_len * width) { return; }
    let t = i / width;
    let r = i % width;
    let c = r / p.kernel;
    let j = r % p.kernel;
    let src = i32(t * p.stride + j) - i32(p.pad);
    var v = 0.0;
    if (src >= 0 && src < i32(p.len)) {
        v = x[u32(src) * p.channels + c];
    }
    y[i] = v;
}

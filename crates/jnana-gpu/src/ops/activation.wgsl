// Element-wise activations: GELU (tanh approximation, Phi-2's "gelu_new"), GELU (erf, Whisper's
// "gelu") and quick GELU (CLIP's).

struct Params { n: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

@compute @workgroup_size(256)
fn gelu_tanh(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let v = x[i];
    // tanh(z) = 1 - 2 / (exp(2z) + 1), clamped so exp cannot overflow.
    let z = clamp(0.7978845608028654 * (v + 0.044715 * v * v * v), -15.0, 15.0);
    let t = 1.0 - 2.0 / (exp(2.0 * z) + 1.0);
    y[i] = 0.5 * v * (1.0 + t);
}

// erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7).
fn erf(v: f32) -> f32 {
    let s = sign(v);
    let a = abs(v);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    return s * (1.0 - poly * exp(-a * a));
}

@compute @workgroup_size(256)
fn gelu_erf(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let v = x[i];
    y[i] = 0.5 * v * (1.0 + erf(v * 0.7071067811865476));
}

@compute @workgroup_size(256)
fn quick_gelu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let v = x[i];
    y[i] = v / (1.0 + exp(-1.702 * v));
}

use crate::{Error, Gpu, GpuTensor, Result};

const SHADER: &str = include_str!("linear.wgsl");
/// Up to this many rows (one workgroup's), the product runs column-parallel instead of in tiles.
const NARROW_ROWS: usize = 8;

/// `x · wᵀ + b` with `w` as `[out, in]` (PyTorch's layout); `x` is `[..., in]`.
pub fn linear(gpu: &Gpu, x: &GpuTensor, w: &GpuTensor, b: Option<&GpuTensor>) -> Result<GpuTensor> {
    let (m, k) = x.rows_cols();
    let [n, wk] = w.shape() else {
        return Err(Error::Shape {
            op: "linear",
            detail: format!("weight {:?} is not a matrix", w.shape()),
        });
    };
    let (n, wk) = (*n, *wk);
    if wk != k || b.is_some_and(|b| b.elem_count() != n) {
        return Err(Error::Shape {
            op: "linear",
            detail: format!(
                "x {:?}, weight {:?}, bias {:?}",
                x.shape(),
                w.shape(),
                b.map(|b| b.shape().to_vec())
            ),
        });
    }
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("x has a last dimension") = n;
    let y = gpu.output(&shape)?;
    let params = gpu.uniform(&super::MatmulParams {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        has_bias: b.is_some() as u32,
    });
    let (pipeline, groups) = if m <= NARROW_ROWS {
        let lanes = gpu.tuning.max_lanes;
        let key = [
            "linear/narrow1",
            "linear/narrow2",
            "linear/narrow4",
            "linear/narrow8",
            "linear/narrow16",
            "linear/narrow32",
        ][super::lane_split(lanes)];
        let source = super::with_lanes("", lanes, SHADER);
        let [gx, gz, _] = super::grid(n.div_ceil(64 / lanes), 1);
        (gpu.pipeline(key, &source, "narrow"), [gx, 1, gz])
    } else if !gpu.tuning.tiles {
        let source = super::with_lanes("", 1, SHADER);
        let blocks = m.div_ceil(4) * n.div_ceil(4);
        (
            gpu.pipeline("linear/blocked", &source, "blocked"),
            super::grid(blocks, 64),
        )
    } else {
        let groups = [n.div_ceil(16) as u32, m.div_ceil(16) as u32, 1];
        if groups[0] > 65_535 || groups[1] > 65_535 {
            return Err(Error::Shape {
                op: "linear",
                detail: format!("{m}×{n} outputs exceed one dispatch"),
            });
        }
        let source = super::with_lanes("", 1, SHADER);
        (gpu.pipeline("linear", &source, "main"), groups)
    };
    gpu.dispatch(
        &pipeline,
        &[
            &x.buffer,
            &w.buffer,
            &b.unwrap_or(w).buffer,
            &y.buffer,
            &params,
        ],
        groups,
    );
    Ok(y)
}

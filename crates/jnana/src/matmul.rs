//! f32 matrix products through the `gemm` crate (the one candle's CPU matmul uses), for
//! kernels that multiply parts of buffers they already own, on the calling thread.

/// An f32 matrix in memory: where it starts, and the steps (in values) from one row to the next
/// and from one column to the next.
#[derive(Clone, Copy)]
pub(crate) struct Strided {
    pub start: *const f32,
    pub row_step: usize,
    pub col_step: usize,
}

impl Strided {
    /// A row-major matrix with rows `row_step` apart.
    pub fn rows(start: *const f32, row_step: usize) -> Self {
        Self {
            start,
            row_step,
            col_step: 1,
        }
    }

    /// The transpose of a row-major matrix with rows `row_step` apart.
    pub fn transposed(start: *const f32, row_step: usize) -> Self {
        Self {
            start,
            row_step: 1,
            col_step: row_step,
        }
    }
}

/// `dst = scale · lhs · rhs` for an `m × k` `lhs` and a `k × n` `rhs`, into a row-major `dst`
/// with rows `dst_row_step` apart.
///
/// # Safety
/// Every element of the three matrices at those shapes and steps must be in bounds, `dst`'s
/// writable and not read or written by anyone else meanwhile.
pub(crate) unsafe fn product_into(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_row_step: usize,
    lhs: Strided,
    rhs: Strided,
    scale: f32,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_row_step as isize,
        false,
        lhs.start,
        lhs.col_step as isize,
        lhs.row_step as isize,
        rhs.start,
        rhs.col_step as isize,
        rhs.row_step as isize,
        0.0,
        scale,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

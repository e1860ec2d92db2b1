// Shared by the matrix-vector kernels (`LANES` threads per output column, 64 / LANES columns and
// up to 8 rows per 64-thread workgroup): every thread leaves its partial sum of each row in
// `lane_sums[thread][row]`; `sum_lanes` adds each column's lanes into its first lane's slot.
// Called from uniform control flow (it holds barriers).

var<workgroup> lane_sums: array<array<f32, 8>, 64>;

fn sum_lanes(t: u32, lane: u32, rows: u32) {
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s = s / 2u) {
        if (lane < s) {
            for (var r = 0u; r < rows; r = r + 1u) { lane_sums[t][r] = lane_sums[t][r] + lane_sums[t + s][r]; }
        }
        workgroupBarrier();
    }
}

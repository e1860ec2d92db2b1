//! Work split over candle's CPU thread pool (one thread in the browser), for loops that write
//! disjoint parts of one buffer.

use std::ops::Range;

/// Calls `fill(range, part)` on the pool's threads for disjoint `range`s covering `out`, with
/// `part` being `out[range]`.
pub(crate) fn fill_parts<T: Send>(out: &mut [T], fill: impl Fn(Range<usize>, &mut [T]) + Sync) {
    let base = SendPtr(out.as_mut_ptr());
    candle_core::utils::barrier_pool().execute_chunked(out.len(), |range| {
        // SAFETY: the pool hands out disjoint ranges within `0..out.len()`, and `out` stays
        // borrowed until every range is done.
        let part =
            unsafe { std::slice::from_raw_parts_mut(base.get().add(range.start), range.len()) };
        fill(range, part);
    });
}

/// A buffer's start, handed to the pool's threads, which each write their own parts of it.
pub(crate) struct SendPtr<T>(pub(crate) *mut T);
impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}
// SAFETY: used only to hand disjoint parts of one buffer to the pool's threads.
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

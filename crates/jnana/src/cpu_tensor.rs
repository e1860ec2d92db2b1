//! A candle tensor's values read in place on the CPU, for kernels of our own.

use candle_core::{Result, Storage, Tensor, WithDType};

/// `f` on `t`'s values as one slice when `t` is a contiguous CPU tensor of `T`; `None` otherwise
/// (another device, type or layout), for the caller to fall back to candle.
pub(crate) fn with_values<T: WithDType, R>(
    t: &Tensor,
    f: impl FnOnce(&[T]) -> R,
) -> Result<Option<R>> {
    if !t.device().is_cpu() || t.dtype() != T::DTYPE {
        return Ok(None);
    }
    let (storage, layout) = t.storage_and_layout();
    let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) else {
        return Ok(None);
    };
    Ok(Some(f(&cpu.as_slice::<T>()?[start..end])))
}

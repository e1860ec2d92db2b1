//! Tensors on the GPU: a storage buffer of f32 and a shape. Only what the CPU needs comes back.

use crate::pool::{size_class, Lease};
use crate::{Error, Gpu, Result};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// A candle (CPU) tensor's values, flattened: the form the GPU engine takes its inputs in.
pub fn host_values(t: &candle_core::Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

/// Cloning shares the buffer (ops never write their inputs).
#[derive(Clone)]
pub struct GpuTensor {
    pub(crate) buffer: wgpu::Buffer,
    shape: Vec<usize>,
    /// Op outputs go back to the pool when their last clone is dropped.
    _lease: Option<Arc<Lease>>,
}

impl GpuTensor {
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }

    /// The last dimension and the number of rows before it.
    pub(crate) fn rows_cols(&self) -> (usize, usize) {
        let cols = self.shape.last().copied().unwrap_or(1);
        (self.elem_count() / cols.max(1), cols)
    }
}

const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl Gpu {
    /// Refuses a buffer larger than one binding may be.
    pub(crate) fn check_size(&self, what: &str, bytes: u64) -> Result<()> {
        let limit = self
            .summary
            .max_storage_buffer_binding_size
            .min(self.summary.max_buffer_size);
        if bytes > limit {
            return Err(Error::TooLarge {
                what: what.to_string(),
                bytes,
                limit,
            });
        }
        Ok(())
    }

    /// A candle (CPU) tensor's values uploaded as `shape`.
    pub fn upload_tensor(&self, t: &candle_core::Tensor, shape: &[usize]) -> Result<GpuTensor> {
        self.upload(&host_values(t)?, shape)
    }

    pub fn upload(&self, data: &[f32], shape: &[usize]) -> Result<GpuTensor> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::Shape {
                op: "upload",
                detail: format!("{} values for shape {shape:?}", data.len()),
            });
        }
        self.check_size("a tensor", (n.max(1) * 4) as u64)?;
        self.check()?;
        // An empty tensor still gets one element of storage (a zero-sized binding is invalid).
        let buffer = self.buffer_from("tensor", bytemuck::cast_slice(data), USAGE);
        Ok(GpuTensor {
            buffer,
            shape: shape.to_vec(),
            _lease: None,
        })
    }

    /// A zeroed tensor, from the pool of freed outputs when one fits.
    pub fn zeros(&self, shape: &[usize]) -> Result<GpuTensor> {
        self.pooled(shape, true)
    }

    /// A tensor for an op that writes every element of it: a reused buffer keeps its old
    /// contents, so no clear ends the compute pass the op's dispatch shares with its neighbours.
    pub(crate) fn output(&self, shape: &[usize]) -> Result<GpuTensor> {
        self.pooled(shape, false)
    }

    fn pooled(&self, shape: &[usize], zeroed: bool) -> Result<GpuTensor> {
        let n: usize = shape.iter().product();
        let bytes = (n.max(1) * 4) as u64;
        self.check_size("a result", bytes)?;
        let class = size_class(bytes);
        let class = if self.check_size("a result", class).is_ok() {
            class
        } else {
            bytes
        };
        let (buffer, lease, was_used) = self.pool.take(&self.device, class, USAGE);
        // New buffers start zeroed (wgpu guarantees it); a reused one is cleared in the stream's
        // order, after every recorded read of its previous contents.
        if was_used && zeroed {
            self.record(|encoder| encoder.clear_buffer(&buffer, 0, None));
        }
        Ok(GpuTensor {
            buffer,
            shape: shape.to_vec(),
            _lease: Some(lease),
        })
    }

    /// A copy of rows `start..start + count` of `t` (`[rows, cols]`), recorded in order.
    pub fn rows(&self, t: &GpuTensor, start: usize, count: usize) -> Result<GpuTensor> {
        let (rows, cols) = t.rows_cols();
        if start + count > rows {
            return Err(Error::Shape {
                op: "rows",
                detail: format!("rows {start}..{} of {rows}", start + count),
            });
        }
        let out = self.output(&[count, cols])?;
        self.copy_at(
            &t.buffer,
            (start * cols * 4) as u64,
            &out.buffer,
            0,
            (count * cols * 4) as u64,
        );
        Ok(out)
    }

    /// The rows of `parts` one after another (all `[_, cols]`).
    pub fn stack_rows(&self, parts: &[&GpuTensor]) -> Result<GpuTensor> {
        let cols = parts.first().map_or(0, |t| t.rows_cols().1);
        if parts.iter().any(|t| t.rows_cols().1 != cols) {
            return Err(Error::Shape {
                op: "stack_rows",
                detail: format!(
                    "{:?}",
                    parts.iter().map(|t| t.shape().to_vec()).collect::<Vec<_>>()
                ),
            });
        }
        let rows: usize = parts.iter().map(|t| t.rows_cols().0).sum();
        let out = self.output(&[rows, cols])?;
        let mut at = 0u64;
        for t in parts {
            let bytes = (t.elem_count() * 4) as u64;
            self.copy_at(&t.buffer, 0, &out.buffer, at, bytes);
            at += bytes;
        }
        Ok(out)
    }

    /// A buffer holding `bytes` (a multiple of 4). Written through the queue rather than mapped at
    /// creation: on a lost device that only records an error instead of panicking.
    pub(crate) fn buffer_from(
        &self,
        label: &str,
        bytes: &[u8],
        usage: wgpu::BufferUsages,
    ) -> wgpu::Buffer {
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.len().max(4) as u64,
            usage: usage | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buffer, 0, bytes);
        self.uploaded
            .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        buffer
    }

    /// A small uniform buffer of an op's parameters.
    pub(crate) fn uniform<T: bytemuck::Pod>(&self, value: &T) -> wgpu::Buffer {
        let bytes = bytemuck::bytes_of(value);
        self.pool.uniform(bytes, || {
            self.buffer_from("params", bytes, wgpu::BufferUsages::UNIFORM)
        })
    }

    /// Submits the recorded work and reads `t` back.
    pub async fn read(&self, t: &GpuTensor) -> Result<Vec<f32>> {
        self.check()?;
        let bytes = (t.elem_count().max(1) * 4) as u64;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("read back"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.copy(&t.buffer, &staging, bytes);
        self.submit();
        let mapped = Mapped::default();
        let done = mapped.clone();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            done.finish(r.map_err(|e| e.to_string()))
        });
        #[cfg(not(target_arch = "wasm32"))]
        {
            let waited = std::time::Instant::now();
            // Natively the result is ready when this returns. Another thread polling the same
            // device can be the one that runs our callback, a moment after our poll returns.
            loop {
                self.device
                    .poll(wgpu::PollType::wait_indefinitely())
                    .map_err(|e| Error::ReadBack(e.to_string()))?;
                if mapped.is_done() {
                    break;
                }
                std::thread::yield_now();
            }
            self.timing.lock().expect("timing").waiting += waited.elapsed();
        }
        let mapped = mapped.await;
        // A failed step makes the mapping fail too; the device's own report says why.
        self.check()?;
        mapped.map_err(Error::ReadBack)?;
        let values = {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| Error::ReadBack(e.to_string()))?;
            bytemuck::cast_slice::<u8, f32>(&view)[..t.elem_count()].to_vec()
        };
        staging.unmap();
        Ok(values)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_blocking(&self, t: &GpuTensor) -> Result<Vec<f32>> {
        pollster::block_on(self.read(t))
    }
}

/// Resolves when `map_async`'s callback has run (in the browser, from the event loop).
#[derive(Clone, Default)]
struct Mapped(Arc<Mutex<MapState>>);

/// The callback's outcome once it ran, and who to wake then.
type MapState = (Option<std::result::Result<(), String>>, Option<Waker>);

impl Mapped {
    #[cfg(not(target_arch = "wasm32"))]
    fn is_done(&self) -> bool {
        self.0.lock().expect("map state").0.is_some()
    }

    fn finish(&self, r: std::result::Result<(), String>) {
        let mut s = self.0.lock().expect("map state");
        s.0 = Some(r);
        if let Some(w) = s.1.take() {
            w.wake();
        }
    }
}

impl Future for Mapped {
    type Output = std::result::Result<(), String>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.0.lock().expect("map state");
        match s.0.take() {
            Some(r) => Poll::Ready(r),
            None => {
                s.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

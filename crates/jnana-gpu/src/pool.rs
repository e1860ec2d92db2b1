//! What a forward step would otherwise create again every time: op outputs come from a pool of
//! buffers freed by earlier steps, a kernel's parameters from a cache of uniforms by content, and
//! the bind group of a dispatch from a cache keyed by its pipeline and buffers (with reused
//! buffers and uniforms, a decode step binds the same groups as the one before it). In a browser
//! each creation is a call into JavaScript; natively, an allocation.
//!
//! Reuse is safe in the stream's order: a pooled buffer is only ever written by recorded GPU work
//! (never by `queue.write_buffer`, which would run before commands recorded earlier), so a
//! dispatch that still reads its previous contents is recorded before the one that overwrites it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// Pooled bytes beyond this are freed instead (a long prefill's activations need not stay).
const MAX_POOLED_BYTES: u64 = 256 << 20;
/// Cached uniforms and bind groups beyond these are all dropped (they are cheap to remake, and
/// per-step parameters such as a cache length would otherwise pile up).
const MAX_UNIFORMS: usize = 4096;
const MAX_BIND_GROUPS: usize = 8192;

#[derive(Default)]
pub(crate) struct Pool {
    free: Mutex<Free>,
    uniforms: Mutex<HashMap<Vec<u8>, wgpu::Buffer>>,
    bind_groups: Mutex<HashMap<(wgpu::ComputePipeline, Vec<wgpu::Buffer>), wgpu::BindGroup>>,
    stats: Mutex<PoolStats>,
}

#[derive(Default)]
struct Free {
    by_size: HashMap<u64, Vec<wgpu::Buffer>>,
    bytes: u64,
}

/// How often the caches saved a creation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub buffers_reused: u64,
    pub buffers_created: u64,
    pub bind_groups_reused: u64,
    pub bind_groups_created: u64,
}

/// Returns its buffer to the pool when the last tensor sharing it is dropped.
pub(crate) struct Lease {
    buffer: wgpu::Buffer,
    pool: Weak<Pool>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.give_back(self.buffer.clone());
        }
    }
}

/// Sizes rounded up to a quarter of their power of two (≤ 25 % spare), so a tensor that grows
/// by a row per step (attention scores) keeps reusing one buffer for many steps.
pub(crate) fn size_class(bytes: u64) -> u64 {
    let bytes = bytes.max(4);
    if bytes <= 1024 {
        return bytes.next_multiple_of(256);
    }
    let step = (1u64 << (63 - bytes.leading_zeros())) / 4;
    bytes.next_multiple_of(step)
}

impl Pool {
    /// A buffer of `bytes` (a size class), its lease, and whether it was used before (a new one
    /// is zeroed).
    pub(crate) fn take(
        self: &Arc<Self>,
        device: &wgpu::Device,
        bytes: u64,
        usage: wgpu::BufferUsages,
    ) -> (wgpu::Buffer, Arc<Lease>, bool) {
        let reused = {
            let mut free = self.free.lock().expect("pool");
            let buffer = free.by_size.get_mut(&bytes).and_then(Vec::pop);
            if let Some(b) = &buffer {
                free.bytes -= b.size();
            }
            buffer
        };
        let mut stats = self.stats.lock().expect("pool stats");
        let was_used = reused.is_some();
        let buffer = match reused {
            Some(b) => {
                stats.buffers_reused += 1;
                b
            }
            None => {
                stats.buffers_created += 1;
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("pooled"),
                    size: bytes,
                    usage,
                    mapped_at_creation: false,
                })
            }
        };
        // Natively wgpu's handles are Send + Sync and a `Gpu` may be shared between threads; in a
        // browser they are not, and there is one thread.
        #[allow(clippy::arc_with_non_send_sync)]
        let lease = Arc::new(Lease {
            buffer: buffer.clone(),
            pool: Arc::downgrade(self),
        });
        (buffer, lease, was_used)
    }

    fn give_back(&self, buffer: wgpu::Buffer) {
        let mut free = self.free.lock().expect("pool");
        if free.bytes + buffer.size() <= MAX_POOLED_BYTES {
            free.bytes += buffer.size();
            free.by_size.entry(buffer.size()).or_default().push(buffer);
        }
    }

    /// The uniform holding `bytes`, made once (uniforms are never written again).
    pub(crate) fn uniform(
        &self,
        bytes: &[u8],
        make: impl FnOnce() -> wgpu::Buffer,
    ) -> wgpu::Buffer {
        let mut uniforms = self.uniforms.lock().expect("uniforms");
        if let Some(b) = uniforms.get(bytes) {
            return b.clone();
        }
        if uniforms.len() >= MAX_UNIFORMS {
            uniforms.clear();
        }
        let buffer = make();
        uniforms.insert(bytes.to_vec(), buffer.clone());
        buffer
    }

    /// The bind group of `buffers` (bound in order at group 0) for `pipeline`, made once.
    pub(crate) fn bind_group(
        &self,
        pipeline: &wgpu::ComputePipeline,
        buffers: &[&wgpu::Buffer],
        make: impl FnOnce() -> wgpu::BindGroup,
    ) -> wgpu::BindGroup {
        let key = (
            pipeline.clone(),
            buffers.iter().map(|&b| b.clone()).collect::<Vec<_>>(),
        );
        let mut groups = self.bind_groups.lock().expect("bind groups");
        let mut stats = self.stats.lock().expect("pool stats");
        if let Some(g) = groups.get(&key) {
            stats.bind_groups_reused += 1;
            return g.clone();
        }
        stats.bind_groups_created += 1;
        if groups.len() >= MAX_BIND_GROUPS {
            groups.clear();
        }
        let group = make();
        groups.insert(key, group.clone());
        group
    }

    pub(crate) fn stats(&self) -> PoolStats {
        *self.stats.lock().expect("pool stats")
    }

    /// Drops every free buffer and cached group (they keep buffers — weights among them — alive).
    pub(crate) fn trim(&self) {
        *self.free.lock().expect("pool") = Free::default();
        self.uniforms.lock().expect("uniforms").clear();
        self.bind_groups.lock().expect("bind groups").clear();
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_waste_at_most_a_quarter() {
        assert_eq!(size_class(0), 256);
        assert_eq!(size_class(1024), 1024);
        assert_eq!(size_class(1025), 1280);
        assert_eq!(size_class(4096), 4096);
        assert_eq!(size_class(4097), 5120);
        for bytes in [1500u64, 10_240 * 4, 51_200 * 4, 123_457, 84 << 20] {
            let c = size_class(bytes);
            assert!(c >= bytes && (c - bytes) * 4 <= bytes, "{bytes} → {c}");
        }
    }
}

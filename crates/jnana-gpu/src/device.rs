//! Adapter and device setup: the adapter's real limits are requested (not wgpu's conservative
//! defaults, which cap storage bindings at 128 MiB — too small for Phi-2's embedding), and
//! `shader-f16` when the adapter has it.

use crate::pool::{Pool, PoolStats};
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What the UI and the benchmarks say about the GPU in use.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    /// A software adapter (lavapipe, SwiftShader, WARP).
    pub fallback: bool,
    pub shader_f16: bool,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
}

pub struct Gpu {
    /// What the adapter offers; the device was asked for all of it.
    pub adapter_limits: wgpu::Limits,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub summary: AdapterSummary,
    pipelines: Mutex<HashMap<&'static str, wgpu::ComputePipeline>>,
    recording: Mutex<Option<Recording>>,
    pub(crate) tuning: Tuning,
    /// Why the device cannot be trusted any more: its loss (preferred: it explains the errors
    /// that follow it) and the first error it reported outside any error scope. Every later
    /// read-back fails with it (wgpu would otherwise panic natively or only log in a browser).
    lost: Arc<Mutex<Option<String>>>,
    fault: Arc<Mutex<Option<String>>>,
    /// Bytes written into GPU buffers so far (weights, inputs and parameters).
    pub(crate) uploaded: std::sync::atomic::AtomicU64,
    pub(crate) pool: Arc<Pool>,
    pub(crate) timing: Mutex<Timing>,
}

/// Where the time of GPU work goes, natively: recording it on the CPU (the model code, the
/// caches, wgpu's encoding and submission) versus waiting for the GPU to finish it. On a fast GPU
/// the first dominates when a step is bound by launch overhead rather than by the GPU.
#[derive(Debug, Default, Clone, Copy)]
pub struct Timing {
    pub recording: std::time::Duration,
    pub waiting: std::time::Duration,
    #[cfg(not(target_arch = "wasm32"))]
    opened: Option<std::time::Instant>,
}

/// The open command encoder and the compute pass that consecutive dispatches share: a pass per
/// dispatch cost about as much CPU time as the dispatch itself (wgpu still places the barriers
/// between the dispatches of one pass).
struct Recording {
    // Declared first so it ends before the encoder it records into is finished.
    pass: Option<wgpu::ComputePass<'static>>,
    encoder: wgpu::CommandEncoder,
}

/// Kernel choices that depend on the adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Most threads a matrix-vector product gives one output column (a power of two ≤ 32).
    pub max_lanes: usize,
    /// Many-row float products in shared-memory tiles (GPUs) rather than per-thread 4×4 blocks
    /// (software adapters, where workgroup barriers are costly).
    pub tiles: bool,
}

impl Tuning {
    /// A software adapter (lavapipe, SwiftShader) runs a workgroup's threads as CPU SIMD lanes:
    /// one column per thread is ~4× faster than splitting k, and 4×4 blocks ~10× faster than
    /// tiles (measured on lavapipe); a GPU wants a warp per column and tiles.
    pub fn for_adapter(software: bool) -> Self {
        if software {
            Self {
                max_lanes: 1,
                tiles: false,
            }
        } else {
            Self {
                max_lanes: 32,
                tiles: true,
            }
        }
    }
}

impl Gpu {
    /// The highest-performance adapter with its real limits.
    pub async fn new() -> Result<Self> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let features = adapter.features() & wgpu::Features::SHADER_F16;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("jnana"),
                required_features: features,
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Device(e.to_string()))?;
        let (lost, fault) = (Arc::new(Mutex::new(None)), Arc::new(Mutex::new(None)));
        let record = |slot: &Arc<Mutex<Option<String>>>, message: String| {
            slot.lock().expect("fault slot").get_or_insert(message);
        };
        let on_error = fault.clone();
        device.on_uncaptured_error(Arc::new(move |e| record(&on_error, e.to_string())));
        let on_lost = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            record(
                &on_lost,
                format!("the device was lost ({reason:?}: {message})"),
            )
        });
        let summary = AdapterSummary {
            // Browsers may hide the adapter's name.
            name: match (info.name.is_empty(), info.device_type) {
                (false, _) => info.name,
                (true, wgpu::DeviceType::Cpu) => "software adapter".into(),
                (true, _) => "unnamed adapter".into(),
            },
            backend: format!("{:?}", info.backend),
            fallback: info.device_type == wgpu::DeviceType::Cpu,
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
            max_buffer_size: limits.max_buffer_size,
        };
        Ok(Self {
            adapter_limits: limits,
            device,
            queue,
            pipelines: Mutex::new(HashMap::new()),
            recording: Mutex::new(None),
            timing: Mutex::default(),
            tuning: Tuning::for_adapter(summary.fallback),
            lost,
            fault,
            uploaded: Default::default(),
            pool: Default::default(),
            summary,
        })
    }

    /// Other kernel choices than the adapter's (tests run every variant on one adapter).
    pub fn with_tuning(mut self, tuning: Tuning) -> Self {
        self.tuning = Tuning {
            max_lanes: tuning.max_lanes.next_power_of_two().clamp(1, 32),
            ..tuning
        };
        self
    }

    pub fn tuning(&self) -> Tuning {
        self.tuning
    }

    /// Bytes written into GPU buffers so far; after uploading models, about their GPU memory.
    pub fn uploaded_bytes(&self) -> u64 {
        self.uploaded.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The device's first uncaptured error or its loss, if any happened.
    pub fn check(&self) -> Result<()> {
        // Natively, callbacks (the loss report among them) run when the device is polled.
        #[cfg(not(target_arch = "wasm32"))]
        let _ = self.device.poll(wgpu::PollType::Poll);
        let lost = self.lost.lock().expect("fault slot").clone();
        match lost.or_else(|| self.fault.lock().expect("fault slot").clone()) {
            Some(message) => Err(Error::Failed(message)),
            None => Ok(()),
        }
    }

    /// [`Gpu::new`], blocking (native only: a browser cannot block).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking() -> Result<Self> {
        pollster::block_on(Self::new())
    }

    /// The compute pipeline of `entry` in `source`, compiled once.
    pub(crate) fn pipeline(
        &self,
        key: &'static str,
        source: &str,
        entry: &str,
    ) -> wgpu::ComputePipeline {
        let mut cache = self.pipelines.lock().expect("pipeline cache");
        cache
            .entry(key)
            .or_insert_with(|| {
                let module = self
                    .device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(key),
                        source: wgpu::ShaderSource::Wgsl(source.into()),
                    });
                self.device
                    .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(key),
                        layout: None,
                        module: &module,
                        entry_point: Some(entry),
                        compilation_options: Default::default(),
                        cache: None,
                    })
            })
            .clone()
    }

    /// Records one dispatch of `pipeline` with `buffers` bound in order at group 0.
    pub(crate) fn dispatch(
        &self,
        pipeline: &wgpu::ComputePipeline,
        buffers: &[&wgpu::Buffer],
        groups: [u32; 3],
    ) {
        let bind_group = self.pool.bind_group(pipeline, buffers, || {
            let entries: Vec<wgpu::BindGroupEntry> = buffers
                .iter()
                .enumerate()
                .map(|(i, b)| wgpu::BindGroupEntry {
                    binding: i as u32,
                    resource: b.as_entire_binding(),
                })
                .collect();
            self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            })
        });
        self.with_recording(|r| {
            let pass = r.pass.get_or_insert_with(|| {
                r.encoder
                    .begin_compute_pass(&wgpu::ComputePassDescriptor::default())
                    .forget_lifetime()
            });
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        });
    }

    /// How often outputs and bind groups were reused rather than created.
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    /// Frees pooled outputs and cached uniforms and bind groups (which keep the buffers they
    /// bind alive): after dropping models, so their weights really go.
    pub fn trim(&self) {
        self.pool.trim();
    }

    /// Records into the open command encoder (after ending its compute pass), opening one if
    /// needed.
    pub(crate) fn record(&self, f: impl FnOnce(&mut wgpu::CommandEncoder)) {
        self.with_recording(|r| {
            r.pass = None;
            f(&mut r.encoder)
        });
    }

    fn with_recording(&self, f: impl FnOnce(&mut Recording)) {
        let mut slot = self.recording.lock().expect("recording");
        f(slot.get_or_insert_with(|| {
            #[cfg(not(target_arch = "wasm32"))]
            {
                self.timing.lock().expect("timing").opened = Some(std::time::Instant::now());
            }
            Recording {
                pass: None,
                encoder: self
                    .device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("jnana step"),
                    }),
            }
        }));
    }

    /// Submits everything recorded since the last submission.
    pub fn submit(&self) {
        if let Some(Recording { pass, encoder }) = self.recording.lock().expect("recording").take()
        {
            drop(pass);
            self.queue.submit([encoder.finish()]);
            #[cfg(not(target_arch = "wasm32"))]
            {
                let mut timing = self.timing.lock().expect("timing");
                if let Some(opened) = timing.opened.take() {
                    timing.recording += opened.elapsed();
                }
            }
        }
    }

    /// Time spent recording and waiting so far (zero in a browser, which has no clock here).
    pub fn timing(&self) -> Timing {
        *self.timing.lock().expect("timing")
    }

    /// Hands the queued buffer writes to the GPU and, natively, waits for them, so the staging
    /// memory behind them is freed: uploading model after model without this would hold a second
    /// copy of every weight until the first computation.
    pub fn flush_uploads(&self) -> Result<()> {
        self.submit();
        self.queue.submit([]);
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Failed(e.to_string()))?;
        self.check()
    }

    /// Records a copy, in order with the recorded dispatches.
    pub(crate) fn copy(&self, from: &wgpu::Buffer, to: &wgpu::Buffer, bytes: u64) {
        self.copy_at(from, 0, to, 0, bytes);
    }

    pub(crate) fn copy_at(
        &self,
        from: &wgpu::Buffer,
        from_at: u64,
        to: &wgpu::Buffer,
        to_at: u64,
        bytes: u64,
    ) {
        self.record(|encoder| encoder.copy_buffer_to_buffer(from, from_at, to, to_at, bytes));
    }
}

//! The models: built from storage without touching the network, answering and transcribing.

use super::{now_ms, post, storage, store};
use crate::protocol::{Compute, FromWorker, Params, PcmInfo};
use jnana::bundle::{
    self, check_file, ConcatReader, FileEntry, FileProvider, LoadOptions, LoadProgress, Manifest,
};
use jnana::pipeline::{AudioInput, Request};
use jnana::weights::ReadSeek;
use jnana::{Conversation, GenerationParams, Jnana};
use jnana_gpu::engine::GpuModels;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::rc::Rc;

/// The loaded models and the conversation. An answer in progress holds the model by a shared
/// handle and takes the conversation out while it runs (a GPU result arrives through the event
/// loop, so the answer spans awaits).
#[derive(Default)]
pub struct Engine {
    pub model: Option<Rc<Jnana>>,
    pub conversation: Option<Conversation>,
    pub manifest_url: Option<String>,
}

#[cfg(not(feature = "relaxed-simd"))]
const CPU: &str = "CPU (WebAssembly SIMD)";
#[cfg(not(feature = "relaxed-simd"))]
const CPU_PAIR: &str = "CPU (WebAssembly SIMD, 2 workers)";
#[cfg(feature = "relaxed-simd")]
const CPU: &str = "CPU (WebAssembly relaxed SIMD)";
#[cfg(feature = "relaxed-simd")]
const CPU_PAIR: &str = "CPU (WebAssembly relaxed SIMD, 2 workers)";

/// Files opened from storage before the (synchronous) loaders run.
struct StoredFiles {
    files: HashMap<String, Vec<(storage::OpfsReader, u64)>>,
}

impl FileProvider for StoredFiles {
    fn open(&mut self, entry: &FileEntry) -> jnana::Result<Box<dyn ReadSeek>> {
        let mut parts = self
            .files
            .remove(&entry.name)
            .ok_or_else(|| jnana::Error::file(&entry.name, "is not in storage"))?;
        let mut reader: Box<dyn ReadSeek> = if parts.len() == 1 {
            Box::new(parts.remove(0).0)
        } else {
            Box::new(ConcatReader::new(
                parts
                    .into_iter()
                    .map(|(r, s)| (Box::new(r) as Box<dyn ReadSeek>, s))
                    .collect(),
            )?)
        };
        // Hashes were checked when the files were stored; sizes are checked again here.
        check_file(entry, &mut reader, false)?;
        Ok(reader)
    }
}

/// Builds the models of a stored, complete bundle where `compute` says: on the GPU, straight
/// from storage (Phi-2's layers go up one by one as they are read; only what the pipeline uses
/// stays in the page), else on the CPU. Reports `Loaded` with the engine and why.
pub async fn load(manifest_url: &str, compute: Compute) -> Result<(Jnana, Conversation), String> {
    let started = now_ms();
    let dir = store::dir(manifest_url).await?;
    let state = store::state(&dir)
        .await
        .filter(|s| s.complete)
        .ok_or_else(|| "this model is not fully downloaded yet: press Download".to_string())?;
    let manifest = storage::read_small(&dir, "manifest.json")
        .await
        .ok_or("the stored manifest is missing: download the model again")?;
    let manifest =
        Manifest::from_json(&String::from_utf8_lossy(&manifest)).map_err(|e| e.to_string())?;
    let mut progress = |p: LoadProgress| {
        post(&FromWorker::LoadProgress {
            step: p.step,
            steps: p.steps,
            what: p.what,
        })
    };
    let on_cpu = |(model, workers): (Jnana, Result<(), String>), note: String| {
        let conversation = model.new_conversation();
        match workers {
            Ok(()) => {
                let shared = super::partner::shared_weights();
                let note = format!(
                    "{note} {shared} of Phi-2's weights are split between two CPU workers."
                );
                (model, conversation, CPU_PAIR.to_string(), note)
            }
            Err(why) => (
                model,
                conversation,
                CPU.to_string(),
                format!("{note} {why}"),
            ),
        }
    };
    let (model, conversation, backend, note) = match start_gpu(compute).await {
        Ok((gpu, summary)) => {
            super::partner::stop();
            let mut provider = open_files(&dir, &manifest).await?;
            let options = LoadOptions::default();
            let loaded = GpuModels::load(
                Rc::new(gpu),
                &manifest,
                &mut provider,
                &options,
                &mut progress,
            )
            .and_then(|(model, models)| Ok((models.engine()?, model)));
            drop(provider);
            match loaded {
                Ok((engine, model)) => {
                    let conversation = Conversation::with_engine(&model, Box::new(engine));
                    (
                        model,
                        conversation,
                        format!("WebGPU ({})", summary.name),
                        gpu_note(&summary),
                    )
                }
                Err(e) => {
                    let model = load_on_cpu(&dir, &manifest, &mut progress).await?;
                    on_cpu(
                        model,
                        format!(
                            "WebGPU failed while loading the models ({e}); computing on the CPU."
                        ),
                    )
                }
            }
        }
        Err(note) => on_cpu(load_on_cpu(&dir, &manifest, &mut progress).await?, note),
    };
    post(&FromWorker::Loaded {
        name: state.name,
        backend,
        note,
        vision: model.vision.is_some(),
        speech: model.speech.is_some(),
        load_ms: now_ms() - started,
    });
    Ok((model, conversation))
}

/// The bundle's files, opened for the (synchronous) loaders.
async fn open_files(
    dir: &web_sys::FileSystemDirectoryHandle,
    manifest: &Manifest,
) -> Result<StoredFiles, String> {
    let mut files = HashMap::new();
    for entry in &manifest.files {
        let mut parts = Vec::new();
        for (part, stored) in store::parts(entry) {
            let name = store::stored_name(&entry.name, part);
            let handle =
                storage::sync_handle(&storage::file(dir, &name, false).await.map_err(|_| {
                    format!("{name} is missing from storage: download the model again")
                })?)
                .await?;
            parts.push((storage::OpfsReader::new(handle)?, stored.size));
        }
        files.insert(entry.name.clone(), parts);
    }
    Ok(StoredFiles { files })
}

/// The models on the CPU, Phi-2's packed weights shared with a second worker where the page
/// allows one (else why not).
async fn load_on_cpu(
    dir: &web_sys::FileSystemDirectoryHandle,
    manifest: &Manifest,
    progress: &mut dyn FnMut(LoadProgress),
) -> Result<(Jnana, Result<(), String>), String> {
    let workers = super::partner::ensure().await;
    let mut provider = open_files(dir, manifest).await?;
    let model = bundle::load(manifest, &mut provider, &LoadOptions::default(), progress)
        .map_err(|e| e.to_string())?;
    Ok((model, workers))
}

/// WebGPU's device when the models should run there; otherwise why the CPU computes.
async fn start_gpu(
    compute: Compute,
) -> Result<(jnana_gpu::Gpu, jnana_gpu::AdapterSummary), String> {
    match compute {
        Compute::Cpu => return Err("CPU chosen in the settings.".into()),
        Compute::Webgpu if !has_webgpu() => {
            return Err(
                "WebGPU was chosen, but this browser has none: computing on the CPU.".into(),
            )
        }
        Compute::Auto if !has_webgpu() => {
            return Err("No WebGPU in this browser: computing on the CPU.".into())
        }
        _ => {}
    }
    post(&FromWorker::LoadProgress {
        step: 1,
        steps: 1,
        what: "starting WebGPU".into(),
    });
    let gpu = match jnana_gpu::Gpu::new().await {
        // A browser's "no adapter" can be transient (its GPU process starting or restarting),
        // so it is asked once more before the CPU takes over for good.
        Err(jnana_gpu::Error::NoAdapter(_)) => {
            gloo_timers::future::TimeoutFuture::new(1_000).await;
            jnana_gpu::Gpu::new().await
        }
        started => started,
    }
    .map_err(|e| match e {
        // wgpu's own text lists every native backend this build lacks: noise to a user.
        jnana_gpu::Error::NoAdapter(_) => "WebGPU could not start: this browser offers no GPU \
                                           adapter (its GPU may be blocked or unavailable); \
                                           computing on the CPU."
            .to_string(),
        e => format!("WebGPU could not start ({e}); computing on the CPU."),
    })?;
    let summary = gpu.summary.clone();
    if summary.fallback && compute == Compute::Auto {
        return Err(
            "This browser's WebGPU is a software renderer, slower than the CPU path: computing on \
             the CPU (choose WebGPU under Settings → Compute on to use it anyway)."
                .into(),
        );
    }
    Ok((gpu, summary))
}

/// What the badge's tooltip says about the GPU in use.
fn gpu_note(summary: &jnana_gpu::AdapterSummary) -> String {
    let mut note = "Language, vision and speech models on the GPU.".to_string();
    if summary.fallback {
        note.push_str(" This adapter is a software renderer, so it is slow.");
    }
    if !summary.shader_f16 {
        note.push_str(" No shader-f16: computing in f32.");
    }
    note
}

impl Engine {
    pub fn set(&mut self, manifest_url: &str, model: Jnana, conversation: Conversation) {
        self.conversation = Some(conversation);
        self.model = Some(Rc::new(model));
        self.manifest_url = Some(manifest_url.to_string());
    }

    pub fn unload(&mut self) {
        self.model = None;
        self.conversation = None;
        self.manifest_url = None;
    }
}

/// Speech to text on the conversation's engine (Whisper on the GPU when the models are there).
pub async fn transcribe(
    model: &Jnana,
    conversation: &Conversation,
    audio: &AudioInput,
) -> Result<(), String> {
    let t = model
        .transcribe_on(conversation.speech_engine(), audio, |_| {
            ControlFlow::Continue(())
        })
        .await
        .map_err(|e| e.to_string())?;
    post(&FromWorker::Transcript {
        text: t.text,
        seconds: t.audio_seconds,
    });
    Ok(())
}

pub fn has_webgpu() -> bool {
    js_sys::Reflect::get(&super::scope().navigator(), &"gpu".into())
        .map(|g| !g.is_undefined() && !g.is_null())
        .unwrap_or(false)
}

pub fn pcm_input(samples: Vec<f32>, info: PcmInfo) -> AudioInput {
    AudioInput::Pcm {
        samples,
        sample_rate: info.sample_rate,
        channels: info.channels,
    }
}

pub fn request(
    text: Option<String>,
    transcript: Option<String>,
    image: Option<Vec<u8>>,
    pcm: Option<(Vec<f32>, PcmInfo)>,
) -> Request {
    Request {
        image,
        audio: pcm.map(|(samples, info)| pcm_input(samples, info)),
        transcript,
        text,
    }
}

pub fn params(p: &Params) -> GenerationParams {
    GenerationParams {
        max_new_tokens: p.max_new_tokens,
        temperature: p.temperature,
        top_p: p.top_p,
        seed: p.seed,
        ..GenerationParams::default()
    }
}

//! The whole multimodal conversation with Phi-2 and the vision stack on the GPU engine: the same
//! answers as the CPU models of the same tiny random bundle (float reference: dequantized
//! weights), for a picture + question and a follow-up on the same cache, greedy and sampled.

mod common;

use common::model::{fixture, tiny_bundle};
use jnana::bundle::{self, BundleFile, FileFormat, LoadOptions, Manifest, MemoryProvider, Role};
use jnana::weights::{write_safetensors, QuantizedMatmul};
use jnana::{Conversation, GenerationParams, Jnana, Request};
use jnana_gpu::engine::GpuModels;
use std::rc::Rc;

/// The float reference: dequantized weights.
fn float_weights() -> LoadOptions {
    LoadOptions {
        quantized_matmul: QuantizedMatmul::Dequantize,
        ..LoadOptions::default()
    }
}

fn load(manifest: &Manifest, files: &[BundleFile]) -> Jnana {
    let mut provider = MemoryProvider::from_files(files);
    bundle::load(manifest, &mut provider, &float_weights(), &mut |_| {}).unwrap()
}

fn tiny_model() -> Jnana {
    let (manifest, files) = tiny_bundle(|_| {});
    load(&manifest, &files)
}

/// The tiny bundle with a PEFT adapter (random factors) on every layer's q_proj, dense and fc1.
fn tiny_bundle_with_adapter() -> (Manifest, Vec<BundleFile>) {
    use rand::{Rng, SeedableRng};
    let (mut manifest, mut files) = tiny_bundle(|_| {});
    let cfg = jnana::synth::SynthSpec::tiny().text;
    let (h, ff) = (cfg.hidden_size, cfg.intermediate_size);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut factor = |rows: usize, cols: usize, scale: f32| {
        let v: Vec<f32> = (0..rows * cols)
            .map(|_| rng.random_range(-scale..scale))
            .collect();
        candle_core::Tensor::from_vec(v, (rows, cols), &candle_core::Device::Cpu).unwrap()
    };
    let mut tensors = Vec::new();
    for i in 0..cfg.num_hidden_layers {
        for (module, inp, out) in [
            ("self_attn.q_proj", h, h),
            ("self_attn.dense", h, h),
            ("mlp.fc1", h, ff),
        ] {
            let p = format!("base_model.model.model.layers.{i}.{module}");
            let a = factor(8, inp, (inp as f32).powf(-0.5));
            tensors.push((format!("{p}.lora_A.weight"), a));
            tensors.push((format!("{p}.lora_B.weight"), factor(out, 8, 0.3)));
        }
    }
    let config = r#"{"peft_type": "LORA", "r": 8, "lora_alpha": 16,
        "target_modules": ["q_proj", "dense", "fc1"]}"#;
    for file in [
        BundleFile::new(
            "adapter_config.json",
            Role::LoraConfig,
            FileFormat::Json,
            config.into(),
        ),
        BundleFile::new(
            "adapter_model.safetensors",
            Role::LoraWeights,
            FileFormat::Safetensors,
            write_safetensors(&tensors).unwrap(),
        ),
    ] {
        manifest.files.push(file.entry.clone());
        files.push(file);
    }
    (manifest, files)
}

fn answers(
    model: &Jnana,
    conversation: &mut Conversation,
    params: &GenerationParams,
) -> Vec<Vec<u32>> {
    let picture = std::fs::read(fixture("clip_vision/image.png")).unwrap();
    let turns = [
        Request {
            image: Some(picture),
            text: Some("What is in this picture?".into()),
            ..Request::default()
        },
        Request {
            text: Some("And what colour is it?".into()),
            ..Request::default()
        },
    ];
    turns
        .iter()
        .map(|r| {
            conversation
                .ask(model, r, params, |_| std::ops::ControlFlow::Continue(()))
                .unwrap()
                .tokens
        })
        .collect()
}

/// The CPU copies of the layers are gone: computing there is refused, with the reason.
fn assert_released(light: &Jnana) {
    let e = light
        .new_conversation()
        .ask(
            light,
            &Request {
                text: Some("Hello".into()),
                ..Request::default()
            },
            &GenerationParams::default(),
            |_| std::ops::ControlFlow::Continue(()),
        )
        .map(|_| ())
        .expect_err("released")
        .to_string();
    assert!(e.contains("moved to the GPU engine"), "{e}");
}

#[test]
fn gpu_conversation_answers_as_the_cpu_one() {
    let model = tiny_model();
    let g = Rc::new(
        jnana_gpu::Gpu::new_blocking()
            .unwrap_or_else(|e| panic!("{e} (on Debian: apt-get install mesa-vulkan-drivers)")),
    );
    let models = GpuModels::upload(g, &model, &mut |_| {}).unwrap();
    for params in [
        GenerationParams {
            max_new_tokens: 16,
            ..GenerationParams::default()
        },
        GenerationParams {
            max_new_tokens: 16,
            temperature: 0.8,
            top_p: Some(0.9),
            seed: 7,
            ..GenerationParams::default()
        },
    ] {
        // Once on the GPU, the CPU copies of the layers can go; the pipeline needs only the rest.
        let mut light = model.clone();
        light.release_layers();
        let mut on_gpu = Conversation::with_engine(&light, Box::new(models.engine().unwrap()));
        assert!(
            on_gpu.engine_name().starts_with("GPU"),
            "{}",
            on_gpu.engine_name()
        );
        let gpu_ids = answers(&light, &mut on_gpu, &params);
        let cpu_ids = answers(&model, &mut model.new_conversation(), &params);
        assert!(gpu_ids.iter().all(|a| !a.is_empty()));
        assert_eq!(gpu_ids, cpu_ids, "temperature {}", params.temperature);
        assert_eq!(on_gpu.encoded_images(), 1);
        assert_released(&light);
    }
}

#[test]
fn a_bundle_streams_onto_the_gpu_with_its_adapter_and_answers_as_the_cpu_load() {
    let (manifest, files) = tiny_bundle_with_adapter();
    let g = Rc::new(
        jnana_gpu::Gpu::new_blocking()
            .unwrap_or_else(|e| panic!("{e} (on Debian: apt-get install mesa-vulkan-drivers)")),
    );
    let mut heard = Vec::new();
    let (light, models) = GpuModels::load(
        g,
        &manifest,
        &mut MemoryProvider::from_files(&files),
        &float_weights(),
        &mut |p| heard.push(format!("[{}/{}] {}", p.step, p.steps, p.what)),
    )
    .unwrap();
    // Each layer was reported on its way up, then the other models.
    for want in [
        "LoRA adapter",
        "language model: layer 1 of 2 to the GPU",
        "language model: layer 2 of 2 to the GPU",
        "vision model: layer 2 of 2 to the GPU",
        "speech model: layer 4 of 4 to the GPU",
        "uploading the vision model to the GPU",
        "uploading the speech model to the GPU",
    ] {
        assert!(
            heard.iter().any(|h| h.ends_with(want)),
            "{want} in {heard:?}"
        );
    }
    // Nothing but what the pipeline uses stayed on the CPU.
    assert_released(&light);

    let params = GenerationParams {
        max_new_tokens: 16,
        ..GenerationParams::default()
    };
    let mut on_gpu = Conversation::with_engine(&light, Box::new(models.engine().unwrap()));
    let gpu_ids = answers(&light, &mut on_gpu, &params);
    let cpu = load(&manifest, &files);
    let cpu_ids = answers(&cpu, &mut cpu.new_conversation(), &params);
    assert_eq!(gpu_ids, cpu_ids);
    // The adapter was applied (without it the answers differ).
    let plain = tiny_model();
    assert_ne!(
        cpu_ids,
        answers(&plain, &mut plain.new_conversation(), &params)
    );

    // Whisper, streamed too, hears what the CPU model hears.
    let audio = jnana::pipeline::AudioInput::Encoded(
        std::fs::read(common::model::test_asset("jfk.wav")).unwrap(),
    );
    let speech = models
        .speech()
        .map(|s| s as &dyn jnana::speech::WhisperEngine);
    let listen = |model: &Jnana, engine| {
        jnana::engine::now(
            model.transcribe_on(engine, &audio, |_| std::ops::ControlFlow::Continue(())),
        )
        .unwrap()
        .unwrap()
        .windows
        .into_iter()
        .map(|w| w.tokens)
        .collect::<Vec<_>>()
    };
    let on_gpu = listen(&light, speech);
    assert!(!on_gpu[0].is_empty());
    assert_eq!(on_gpu, listen(&cpu, None));
}

//! The whole multimodal conversation with Phi-2 and the vision stack on the GPU engine: the same
//! answers as the CPU models of the same tiny random bundle (float reference: dequantized
//! weights), for a picture + question and a follow-up on the same cache, greedy and sampled.

mod common;

use common::model::{fixture, tiny_bundle};
use jnana::bundle::{self, LoadOptions, MemoryProvider};
use jnana::weights::QuantizedMatmul;
use jnana::{Conversation, GenerationParams, Jnana, Request};
use jnana_gpu::engine::GpuModels;
use std::rc::Rc;

fn tiny_model() -> Jnana {
    let (manifest, files) = tiny_bundle(|_| {});
    bundle::load(
        &manifest,
        &mut MemoryProvider::from_files(&files),
        &LoadOptions {
            quantized_matmul: QuantizedMatmul::Dequantize,
            ..LoadOptions::default()
        },
        &mut |_| {},
    )
    .unwrap()
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
        // The released CPU models refuse to compute, and say why.
        let e = light
            .new_conversation()
            .ask(
                &light,
                &Request {
                    text: Some("Hello".into()),
                    ..Request::default()
                },
                &params,
                |_| std::ops::ControlFlow::Continue(()),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("moved to the GPU engine"), "{e}");
    }
}

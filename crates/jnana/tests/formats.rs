//! The file formats in the wild: Phi-2 GGUF layouts, quantized types, pictures, bundles split
//! in parts, and `convert` from published files to a bundle.

#![cfg(not(target_arch = "wasm32"))]

mod common;

use candle_core::quantized::{ggml_file, gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use common::*;
use jnana::bundle::{self, DirProvider, LoadOptions, MemoryProvider, Role};
use jnana::conformance::{abs_diff, greedy, open_path, read_all};
use jnana::convert::{self, ConvertInputs, WeightDtype};
use jnana::pipeline::PromptPart;
use jnana::preprocess;
use jnana::weights::{self, GgufSource, Prefixed, QuantizedMatmul, TensorSource, Union};
use std::collections::HashMap;
use std::io::Cursor;
use std::sync::Arc;

fn gguf_tensors(path: &str) -> (gguf_file::Content, Vec<(String, QTensor)>) {
    let bytes = std::fs::read(fixture(path)).unwrap();
    let mut r = Cursor::new(bytes);
    let content = gguf_file::Content::read(&mut r).unwrap();
    let mut names: Vec<_> = content.tensor_infos.keys().cloned().collect();
    names.sort();
    let tensors = names
        .iter()
        .map(|n| (n.clone(), content.tensor(&mut r, n, &Device::Cpu).unwrap()))
        .collect();
    (content, tensors)
}

fn clone_q(t: &QTensor) -> QTensor {
    ggml_file::qtensor_from_ggml(
        t.dtype(),
        &t.data().unwrap(),
        t.shape().dims().to_vec(),
        &Device::Cpu,
    )
    .unwrap()
}

fn write_gguf(
    metadata: &HashMap<String, gguf_file::Value>,
    tensors: &[(String, QTensor)],
) -> Vec<u8> {
    let md: Vec<(&str, &gguf_file::Value)> =
        metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &md, &ts).unwrap();
    out.into_inner()
}

fn logits_of(source: Arc<dyn TensorSource>, config: Option<&serde_json::Value>) -> Tensor {
    let phi = bundle::load_phi(source, config, &Device::Cpu, QuantizedMatmul::IntegerDot).unwrap();
    let inputs = read_all(&fixture("phi_gguf/inputs.safetensors"), &Device::Cpu).unwrap();
    let ids = jnana::conformance::ids_of(&inputs["input_ids"]).unwrap();
    let embeds = phi.embed(&ids).unwrap().unsqueeze(0).unwrap();
    phi.forward_trace(&embeds, &mut phi.new_cache())
        .unwrap()
        .logits
}

#[test]
fn mixformer_and_split_qkv_gguf_layouts_match_llama_cpp_fused() {
    let (content, tensors) = gguf_tensors("phi_gguf/phi2-tiny-q8_0.gguf");
    let original = logits_of(
        weights::open_source(
            "fused.gguf",
            Box::new(Cursor::new(write_gguf(&content.metadata, &tensors))),
        )
        .unwrap(),
        None,
    );

    // candle's MixFormer names, no metadata at all: the config comes from the manifest.
    let mixformer: Vec<(String, QTensor)> = tensors
        .iter()
        .map(|(n, t)| {
            let renamed = n
                .replace("token_embd", "transformer.embd.wte")
                .replace("output_norm", "lm_head.ln")
                .replace("attn_norm", "ln")
                .replace("attn_qkv", "mixer.Wqkv")
                .replace("attn_output", "mixer.out_proj")
                .replace("ffn_up", "mlp.fc1")
                .replace("ffn_down", "mlp.fc2")
                .replace("blk.", "transformer.h.");
            let renamed = if renamed.starts_with("output.") {
                renamed.replace("output.", "lm_head.linear.")
            } else {
                renamed
            };
            (renamed, clone_q(t))
        })
        .collect();
    let src = weights::open_source(
        "mixformer.gguf",
        Box::new(Cursor::new(write_gguf(&HashMap::new(), &mixformer))),
    )
    .unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("phi_gguf/config.json")).unwrap())
            .unwrap();
    let e = error_text(
        bundle::load_phi(src.clone(), None, &Device::Cpu, QuantizedMatmul::IntegerDot).map(|_| ()),
    );
    assert!(e.contains("mixformer.gguf") && e.contains("config"), "{e}");
    let (max, _) = abs_diff(&logits_of(src, Some(&config)), &original).unwrap();
    assert_eq!(max, 0.0, "MixFormer names must load the very same weights");

    // Current convert_hf_to_gguf.py writes attn_q / attn_k / attn_v separately.
    let mut split = Vec::new();
    for (n, t) in &tensors {
        if !n.contains("attn_qkv") {
            split.push((n.clone(), clone_q(t)));
            continue;
        }
        let rows = t.shape().dims()[0];
        let data = t.data().unwrap();
        let per = data.len() / 3;
        for (i, part) in ["attn_q", "attn_k", "attn_v"].iter().enumerate() {
            let name = n.replace("attn_qkv", part);
            let q = if t.shape().rank() == 2 {
                ggml_file::qtensor_from_ggml(
                    t.dtype(),
                    &data[i * per..(i + 1) * per],
                    vec![rows / 3, t.shape().dims()[1]],
                    &Device::Cpu,
                )
                .unwrap()
            } else {
                ggml_file::qtensor_from_ggml(
                    t.dtype(),
                    &data[i * per..(i + 1) * per],
                    vec![rows / 3],
                    &Device::Cpu,
                )
                .unwrap()
            };
            split.push((name, q));
        }
    }
    let src = weights::open_source(
        "split.gguf",
        Box::new(Cursor::new(write_gguf(&content.metadata, &split))),
    )
    .unwrap();
    let (max, _) = abs_diff(&logits_of(src, None), &original).unwrap();
    assert!(max < 1e-5, "split q/k/v differs by {max}");
}

#[test]
fn every_quantized_type_loads_and_answers() {
    for ty in [
        GgmlDType::Q4_0,
        GgmlDType::Q4K,
        GgmlDType::Q8_0,
        GgmlDType::F16,
        GgmlDType::F32,
    ] {
        let (m, f) = tiny_bundle(|s| {
            s.text.hidden_size = 256;
            s.text.intermediate_size = 512;
            s.text.num_attention_heads = 8;
            s.text.rotary_dim = 12;
            s.text_quant = ty;
        });
        let mut provider = MemoryProvider::from_files(&f);
        let gguf = provider.files["phi2.gguf"].clone();
        let source = GgufSource::new("phi2.gguf", Box::new(Cursor::new(gguf))).unwrap();
        let matrix = source.meta("blk.0.ffn_up.weight").unwrap();
        let expected_stored = match ty {
            GgmlDType::F32 => weights::StoredType::F32,
            GgmlDType::F16 => weights::StoredType::F16,
            q => weights::StoredType::Quantized(q),
        };
        assert_eq!(matrix.stored, expected_stored, "{ty:?}");
        let run = |mode| {
            let options = LoadOptions {
                quantized_matmul: mode,
                ..LoadOptions::default()
            };
            let model = bundle::load(&m, &mut provider.clone(), &options, &mut |_| {}).unwrap();
            assert!(
                model.phi.is_quantized()
                    == (mode == QuantizedMatmul::IntegerDot
                        && !matches!(ty, GgmlDType::F16 | GgmlDType::F32))
            );
            let ids = model.tokenizer.encode("the quick brown fox").unwrap();
            let embeds = model.phi.embed(&ids).unwrap().unsqueeze(0).unwrap();
            model
                .phi
                .forward(&embeds, &mut model.phi.new_cache())
                .unwrap()
        };
        let exact = run(QuantizedMatmul::Dequantize);
        let fast = run(QuantizedMatmul::IntegerDot);
        let (max, _) = abs_diff(&exact, &fast).unwrap();
        let scale = exact
            .abs()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        // Integer dots round activations to 8 bits; the logits stay close to float math.
        assert!(
            max < 0.05 * scale.max(1.0),
            "{ty:?}: integer-dot differs by {max} (scale {scale})"
        );
        provider.verify_sha256 = true;
    }
}

#[test]
fn synth_is_deterministic() {
    let (m1, f1) = tiny_bundle(|_| {});
    let (m2, f2) = tiny_bundle(|_| {});
    assert_eq!(m1, m2);
    for (a, b) in f1.iter().zip(&f2) {
        assert_eq!(a.bytes, b.bytes, "{}", a.entry.name);
    }
    let (m3, _) = tiny_bundle(|s| s.seed = 1);
    assert_ne!(
        m1.file(Role::LanguageModel).unwrap().sha256,
        m3.file(Role::LanguageModel).unwrap().sha256
    );
}

#[test]
fn a_bundle_split_in_parts_loads_from_a_folder() {
    let (mut manifest, files) = tiny_bundle(|_| {});
    let dir = std::env::temp_dir().join(format!("jnana-parts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in &files {
        if f.entry.role == Role::LanguageModel {
            let part_size = f.bytes.len().div_ceil(3);
            let entry = manifest
                .files
                .iter_mut()
                .find(|e| e.name == f.entry.name)
                .unwrap();
            entry.urls.clear();
            for (i, chunk) in f.bytes.chunks(part_size).enumerate() {
                let name = format!("{}.part{i}", f.entry.name);
                std::fs::write(dir.join(&name), chunk).unwrap();
                entry.parts.push(bundle::Part {
                    urls: vec![name],
                    size: chunk.len() as u64,
                    sha256: None,
                });
            }
        } else {
            std::fs::write(dir.join(&f.entry.name), &f.bytes).unwrap();
        }
    }
    manifest.validate().unwrap();
    let mut provider = DirProvider::new(&dir);
    provider.verify_sha256 = true;
    let model = bundle::load(
        &manifest,
        &mut provider,
        &LoadOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    let whole = tiny_model();
    let ask = |m: &jnana::Jnana| {
        let mut c = m.new_conversation();
        c.ask(
            m,
            &jnana::Request {
                text: Some("hi".into()),
                ..Default::default()
            },
            &jnana::GenerationParams {
                max_new_tokens: 5,
                ..Default::default()
            },
            |_| std::ops::ControlFlow::Continue(()),
        )
        .unwrap()
        .tokens
    };
    assert_eq!(ask(&model), ask(&whole));
    // A missing part is named.
    std::fs::remove_file(dir.join("phi2.gguf.part2")).unwrap();
    let e = error_text(
        bundle::load(
            &manifest,
            &mut provider,
            &LoadOptions::default(),
            &mut |_| {},
        )
        .map(|_| ()),
    );
    assert!(e.contains("phi2.gguf.part2"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// EXIF orientation 6 (rotate 90° clockwise) inserted into a JPEG.
fn jpeg_with_orientation(w: u32, h: u32, orientation: u16) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, _| {
        if x < w / 2 {
            image::Rgb([255, 0, 0])
        } else {
            image::Rgb([0, 0, 255])
        }
    });
    let mut jpeg = Cursor::new(Vec::new());
    img.write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
    let jpeg = jpeg.into_inner();
    let mut tiff = b"II*\x00\x08\x00\x00\x00".to_vec();
    tiff.extend(1u16.to_le_bytes());
    tiff.extend(0x0112u16.to_le_bytes());
    tiff.extend(3u16.to_le_bytes());
    tiff.extend(1u32.to_le_bytes());
    tiff.extend((orientation as u32).to_le_bytes());
    tiff.extend(0u32.to_le_bytes());
    let mut app1 = b"Exif\x00\x00".to_vec();
    app1.extend(tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend([0xFF, 0xE1]);
    out.extend(((app1.len() + 2) as u16).to_be_bytes());
    out.extend(app1);
    out.extend(&jpeg[2..]);
    out
}

#[test]
fn pictures_in_every_supported_format() {
    let img = image::RgbImage::from_fn(60, 40, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 6) as u8, 128])
    });
    for format in [
        image::ImageFormat::Png,
        image::ImageFormat::Jpeg,
        image::ImageFormat::WebP,
        image::ImageFormat::Bmp,
        image::ImageFormat::Gif,
    ] {
        let mut bytes = Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(img.clone())
            .write_to(&mut bytes, format)
            .unwrap();
        let decoded =
            preprocess::decode_image(bytes.get_ref()).unwrap_or_else(|e| panic!("{format:?}: {e}"));
        assert_eq!(decoded.dimensions(), (60, 40), "{format:?}");
        let px = decoded.get_pixel(30, 20).0;
        let want = img.get_pixel(30, 20).0;
        let tol = if matches!(
            format,
            image::ImageFormat::Png | image::ImageFormat::Bmp | image::ImageFormat::WebP
        ) {
            0
        } else {
            40
        };
        for c in 0..3 {
            assert!(
                (px[c] as i32 - want[c] as i32).abs() <= tol,
                "{format:?} pixel {px:?} vs {want:?}"
            );
        }
    }

    // An animated GIF: the first frame is used.
    let mut gif = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new(&mut gif);
        for color in [[200u8, 10, 10, 255], [10, 200, 10, 255]] {
            let frame = image::RgbaImage::from_pixel(16, 16, image::Rgba(color));
            enc.encode_frame(image::Frame::new(frame)).unwrap();
        }
    }
    let first = preprocess::decode_image(&gif).unwrap();
    let p = first.get_pixel(8, 8).0;
    assert!(p[0] > 150 && p[1] < 60, "not the first frame: {p:?}");

    // EXIF orientation 6: a 40x20 landscape photo stored sideways displays as 20x40.
    let rotated = preprocess::decode_image(&jpeg_with_orientation(40, 20, 6)).unwrap();
    assert_eq!(rotated.dimensions(), (20, 40));
    let top = rotated.get_pixel(10, 5).0;
    assert!(
        top[0] > 150 && top[2] < 100,
        "rotation went the wrong way: {top:?}"
    );
}

#[test]
fn preprocessing_follows_clips_recipe() {
    assert_eq!(preprocess::resized_size(480, 311, 224), (345, 224));
    assert_eq!(preprocess::resized_size(311, 480, 224), (224, 345));
    assert_eq!(preprocess::resized_size(100, 100, 224), (224, 224));
    let t = preprocess::image_to_pixel_values(&png(33, 999), &Default::default(), &Device::Cpu)
        .unwrap();
    assert_eq!(t.dims(), [1, 3, 224, 224]);
}

fn small_tokenizer_json() -> String {
    let gpt2 = std::fs::read_to_string(fixture("tokenizers/gpt2/tokenizer.json")).unwrap();
    jnana::synth::truncated_tokenizer_json(&gpt2, 1000).unwrap()
}

fn convert_fixtures(with_adapter: bool, vision_dtype: WeightDtype) -> jnana::Jnana {
    let json = |p: &str| {
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(fixture(p)).unwrap())
            .unwrap()
    };
    let projector: Arc<dyn TensorSource> = Arc::new(Union::new(vec![
        Arc::new(Prefixed::new(
            "linear.",
            open_path(&fixture("projector_pth/proj_ll.pth")).unwrap(),
        )),
        Arc::new(Prefixed::new(
            "res.",
            open_path(&fixture("projector_pth/proj_block.pth")).unwrap(),
        )),
    ]));
    let adapter = with_adapter.then(|| {
        (
            std::fs::read_to_string(fixture("lora/adapter/adapter_config.json")).unwrap(),
            open_path(&fixture("lora/adapter/adapter_model.bin")).unwrap(),
        )
    });
    let inputs = ConvertInputs {
        name: "fixture".into(),
        phi: vec![open_path(&fixture("lora/base/model.safetensors")).unwrap()],
        phi_config: Some(json("lora/base/config.json")),
        adapter,
        clip: Some(open_path(&fixture("clip_vision/model.safetensors")).unwrap()),
        clip_config: Some(json("clip_vision/config.json")),
        projector: Some(projector),
        tokenizer_json: small_tokenizer_json(),
        text_quant: GgmlDType::F32,
        vision_dtype,
    };
    let (manifest, files) = convert::convert(inputs, &mut |_| {}).unwrap();
    let manifest = jnana::bundle::Manifest::from_json(&manifest.to_json()).unwrap();
    assert!(
        manifest.text_config.is_none(),
        "the GGUF carries the text config"
    );
    load(&manifest, &files)
}

#[test]
fn converted_fixture_bundle_reproduces_the_multimodal_reference() {
    let model = convert_fixtures(false, WeightDtype::F32);
    let dev = Device::Cpu;
    let inputs = read_all(&fixture("multimodal/inputs.safetensors"), &dev).unwrap();
    let expected = read_all(&fixture("multimodal/expected.safetensors"), &dev).unwrap();
    let vision = model.vision.as_ref().unwrap();
    let image = vision.encode_pixels(&inputs["pixel_values"], -1).unwrap();
    let ids = |n: &str| PromptPart::Tokens(jnana::conformance::ids_of(&inputs[n]).unwrap());
    let embeds = model
        .embed_prompt(&[
            PromptPart::Image(image),
            ids("eoi_ids"),
            ids("question_ids"),
            ids("eoq_ids"),
        ])
        .unwrap();
    let (max, _) = abs_diff(&embeds, &expected["inputs_embeds"]).unwrap();
    assert!(max < 5e-5, "inputs_embeds differ by {max}");
    let got = greedy(&model.phi, &embeds, 15, Some(999)).unwrap();
    assert_eq!(
        got,
        jnana::conformance::ids_of(&expected["generated_ids"]).unwrap()
    );
}

#[test]
fn converted_bundle_with_the_adapter_merged_matches_peft() {
    let model = convert_fixtures(true, WeightDtype::F32);
    let dev = Device::Cpu;
    let inputs = read_all(&fixture("lora/inputs.safetensors"), &dev).unwrap();
    let expected = read_all(&fixture("lora/expected.safetensors"), &dev).unwrap();
    let ids = jnana::conformance::ids_of(&inputs["input_ids"]).unwrap();
    let embeds = model.phi.embed(&ids).unwrap().unsqueeze(0).unwrap();
    let logits = model
        .phi
        .forward_trace(&embeds, &mut model.phi.new_cache())
        .unwrap()
        .logits;
    let (max, _) = abs_diff(&logits, &expected["logits_merged"]).unwrap();
    assert!(max < 2e-5, "merged logits differ by {max}");
    let prompt = jnana::conformance::ids_of(&inputs["prompt_ids"]).unwrap();
    let pe = model.phi.embed(&prompt).unwrap().unsqueeze(0).unwrap();
    let mut got = prompt.clone();
    got.extend(greedy(&model.phi, &pe, 15, Some(999)).unwrap());
    assert_eq!(
        got,
        jnana::conformance::ids_of(&expected["greedy_ids"]).unwrap()
    );
}

#[test]
fn lora_on_a_quantized_base_is_kept_beside_or_requantized() {
    // The q8_0 fixture model with a random adapter: merged-and-requantized and kept-beside
    // must agree to within one more round of Q8_0 quantization.
    let dev = Device::Cpu;
    let gguf = open_path(&fixture("phi_gguf/phi2-tiny-q8_0.gguf")).unwrap();
    let base = bundle::load_phi(gguf, None, &dev, QuantizedMatmul::IntegerDot).unwrap();
    let cfg = base.config().clone();
    let mut updates = HashMap::new();
    for (i, m, out) in [
        (0, "qkv_proj", 3 * cfg.hidden_size),
        (1, "fc1", cfg.intermediate_size),
        (0, "q_proj", cfg.hidden_size),
    ] {
        let inp = cfg.hidden_size;
        // Deterministic pseudo-random factors.
        let wave = |rows: usize, cols: usize, scale: f64, phase: f32| {
            let n = rows * cols;
            let v: Vec<f32> = (0..n)
                .map(|k| ((k as f32) * 0.7311 + phase).sin())
                .collect();
            (Tensor::from_vec(v, (rows, cols), &dev).unwrap() * scale).unwrap()
        };
        updates.insert(
            format!("layers.{i}.{m}"),
            weights::LowRank {
                a: wave(4, inp, (inp as f64).powf(-0.5), i as f32),
                b: wave(out, 4, 0.3, 1.0 + i as f32),
            },
        );
    }
    let mut kept = base.clone();
    assert_eq!(kept.apply_lora(&updates, false).unwrap(), 3);
    let mut merged = base.clone();
    assert_eq!(merged.apply_lora(&updates, true).unwrap(), 3);
    assert!(merged.is_quantized(), "merging keeps the base's block type");
    let embeds = base.embed(&[5, 17, 300, 42]).unwrap().unsqueeze(0).unwrap();
    let a = kept.forward(&embeds, &mut kept.new_cache()).unwrap();
    let b = merged.forward(&embeds, &mut merged.new_cache()).unwrap();
    let c = base.forward(&embeds, &mut base.new_cache()).unwrap();
    let (diff, _) = abs_diff(&a, &b).unwrap();
    let (effect, _) = abs_diff(&a, &c).unwrap();
    assert!(
        effect > 10.0 * diff,
        "adapter effect {effect} vs merge error {diff}"
    );
}

#[test]
fn a_full_clip_checkpoint_loads_its_vision_tower_and_ignores_the_text_tower() {
    let dev = Device::Cpu;
    let vision = open_path(&fixture("clip_vision/model.safetensors")).unwrap();
    let mut tensors: Vec<(String, Tensor)> = vision
        .names()
        .into_iter()
        .map(|n| (n.clone(), vision.read_f32(&n, &dev).unwrap()))
        .collect();
    // What openai/clip-vit-base-patch32's full checkpoint adds beside the vision tower.
    tensors.push((
        "text_model.embeddings.token_embedding.weight".into(),
        Tensor::zeros((10, 8), candle_core::DType::F32, &dev).unwrap(),
    ));
    tensors.push((
        "text_projection.weight".into(),
        Tensor::zeros((4, 8), candle_core::DType::F32, &dev).unwrap(),
    ));
    tensors.push((
        "logit_scale".into(),
        Tensor::zeros((), candle_core::DType::F32, &dev).unwrap(),
    ));
    let full = weights::open_source(
        "model.safetensors",
        Box::new(Cursor::new(weights::write_safetensors(&tensors).unwrap())),
    )
    .unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("clip_vision/config.json")).unwrap())
            .unwrap();
    let cfg = jnana::models::clip_vision::Config::from_hf_value("config.json", &config).unwrap();
    let clip = bundle::load_clip(full, &cfg, &dev, QuantizedMatmul::IntegerDot).unwrap();
    let inputs = read_all(&fixture("clip_vision/inputs.safetensors"), &dev).unwrap();
    let expected = read_all(&fixture("clip_vision/expected.safetensors"), &dev).unwrap();
    let features = clip.image_features(&inputs["pixel_values"], -1).unwrap();
    let want = expected["last_hidden_state"].narrow(1, 1, 49).unwrap();
    let (max, _) = abs_diff(&features, &want).unwrap();
    assert!(max < 2e-5, "{max}");
}

#[test]
fn a_q8_0_vision_tower_stays_close_to_float() {
    let dev = Device::Cpu;
    let inputs = read_all(&fixture("clip_vision/inputs.safetensors"), &dev).unwrap();
    let float = convert_fixtures(false, WeightDtype::F32);
    let q8 = convert_fixtures(false, WeightDtype::Q8_0);
    let encode = |m: &jnana::Jnana| {
        m.vision
            .as_ref()
            .unwrap()
            .encode_pixels(&inputs["pixel_values"], -1)
            .unwrap()
    };
    let (a, b) = (encode(&float), encode(&q8));
    let (max, mean) = abs_diff(&a, &b).unwrap();
    let scale = a
        .abs()
        .unwrap()
        .max_keepdim(0)
        .unwrap()
        .max_keepdim(1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()[0] as f64;
    assert!(max > 0.0, "Q8_0 weights should change something");
    assert!(
        max < 0.05 * scale && mean < 0.01 * scale,
        "max {max}, mean {mean}, scale {scale}"
    );
}

#[test]
fn candle_transformers_own_quantized_phi_reads_our_gguf_as_we_do() {
    // The peer benchmark times candle-transformers' `quantized_phi` on our synthetic GGUF: it
    // must be the same model there, or the comparison means nothing.
    let (manifest, files) = tiny_bundle(|s| s.text_quant = GgmlDType::Q4_0);
    let gguf = files
        .iter()
        .find(|f| f.entry.role == Role::LanguageModel)
        .unwrap()
        .bytes
        .clone();
    let ours = load(&manifest, &files);
    let prompt: Vec<u32> = (0..24u32).map(|i| (i * 7919 + 13) % 1000).collect();
    let embeds = ours.phi.embed(&prompt).unwrap().unsqueeze(0).unwrap();
    let our_logits = ours
        .phi
        .forward(&embeds, &mut ours.phi.new_cache())
        .unwrap();
    let our_ids = greedy(&ours.phi, &embeds, 12, None).unwrap();

    let mut reader = Cursor::new(gguf);
    let content = gguf_file::Content::read(&mut reader).unwrap();
    let mut peer = candle_transformers::models::quantized_phi::ModelWeights::from_gguf(
        content,
        &mut reader,
        &Device::Cpu,
    )
    .unwrap();
    let input = Tensor::new(prompt.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let peer_logits = peer.forward(&input, 0).unwrap().squeeze(0).unwrap();
    let (max, _) = abs_diff(&our_logits, &peer_logits).unwrap();
    // The same candle kernels on the same blocks: identical here, within 1e-5 anywhere.
    assert!(max <= 1e-5, "last-position logits differ by {max}");
    let mut peer_ids = Vec::new();
    let mut logits = peer_logits;
    for i in 0..12 {
        let id = jnana::sampling::argmax(&logits.to_vec1::<f32>().unwrap());
        peer_ids.push(id);
        let next = Tensor::new(&[id], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        logits = peer
            .forward(&next, prompt.len() + i)
            .unwrap()
            .squeeze(0)
            .unwrap();
    }
    assert_eq!(our_ids, peer_ids);
}

/// Phi-2 with Q4_K or Q8_0 weights whose widths are multiples of 256 (the shapes our own x86
/// kernels take, AVX-512 VNNI): a prompt, then single-token decode steps on the cache, against
/// the same file dequantized to float32 matmuls. The kernels quantize activations to 8 bits (as
/// candle and llama.cpp do), so logits agree to within 2% of their range, not exactly.
fn phi2_on_our_kernel_matches_the_dequantized_weights(quant: GgmlDType) {
    let (manifest, files) = tiny_bundle(|spec| {
        spec.text.hidden_size = 256;
        spec.text.intermediate_size = 1024;
        spec.text.num_attention_heads = 4;
        spec.text.num_key_value_heads = Some(4);
        spec.text.rotary_dim = 32;
        spec.text_quant = quant;
    });
    let with = |quantized_matmul| {
        let mut provider = MemoryProvider::from_files(&files);
        let options = LoadOptions {
            quantized_matmul,
            skip_vision: true,
            skip_speech: true,
            ..LoadOptions::default()
        };
        bundle::load(&manifest, &mut provider, &options, &mut |_| {}).unwrap()
    };
    let (mut ours, reference) = (
        with(QuantizedMatmul::IntegerDot),
        with(QuantizedMatmul::Dequantize),
    );
    let kernel = is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni");
    let kernel_bytes = ours.phi.prepare_cpu_kernels();
    assert_eq!(
        kernel_bytes > 0,
        kernel,
        "the kernel is used exactly where the CPU runs it"
    );
    if !kernel {
        eprintln!("this CPU has no AVX-512 VNNI: candle's {quant:?} kernels computed, not ours");
    }
    let (mut cache_ours, mut cache_ref) = (ours.phi.new_cache(), reference.phi.new_cache());
    let mut feed: Vec<u32> = vec![50256, 464, 3139, 286, 262, 1486, 318];
    for step in 0..6 {
        let embeds = reference.phi.embed(&feed).unwrap().unsqueeze(0).unwrap();
        let got = ours.phi.forward(&embeds, &mut cache_ours).unwrap();
        let want = reference.phi.forward(&embeds, &mut cache_ref).unwrap();
        let max = |t: &Tensor| t.max(0).unwrap().to_scalar::<f32>().unwrap();
        let range = max(&want) - want.min(0).unwrap().to_scalar::<f32>().unwrap();
        let diff = max(&(&got - &want).unwrap().abs().unwrap());
        eprintln!("step {step}: logits differ by at most {diff} (range {range})");
        assert!(
            diff <= 0.02 * range,
            "step {step}: logits differ by {diff} (range {range})"
        );
        // Both are fed the reference's choice: random weights leave near-ties that 8-bit
        // activations may break the other way.
        feed = vec![want.argmax(0).unwrap().to_scalar::<u32>().unwrap()];
    }
}

#[test]
fn phi2_on_our_q4k_kernel_matches_the_dequantized_weights() {
    phi2_on_our_kernel_matches_the_dequantized_weights(GgmlDType::Q4K);
}

#[test]
fn phi2_on_our_q8_0_kernel_matches_the_dequantized_weights() {
    phi2_on_our_kernel_matches_the_dequantized_weights(GgmlDType::Q8_0);
}

/// A prompt longer than one chunk goes through the layers a chunk at a time (`Phi2::forward`),
/// each chunk's attention against the cache the earlier chunks filled: the same last logits as
/// the whole prompt in one pass, and the same next step after it.
#[test]
fn a_prompt_longer_than_a_chunk_answers_as_one_pass() {
    let (content, tensors) = gguf_tensors("phi_gguf/phi2-tiny-q8_0.gguf");
    let source = weights::open_source(
        "phi2.gguf",
        Box::new(Cursor::new(write_gguf(&content.metadata, &tensors))),
    )
    .unwrap();
    // The fixture's 256 positions stretched to hold two chunks (rotary positions are computed,
    // not learned).
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("phi_gguf/config.json")).unwrap())
            .unwrap();
    config["max_position_embeddings"] = 1024.into();
    let phi = bundle::load_phi(
        source,
        Some(&config),
        &Device::Cpu,
        QuantizedMatmul::IntegerDot,
    )
    .unwrap();
    let vocab = phi.config().vocab_size as u32;
    let prompt: Vec<u32> = (0..700u32).map(|i| (i * 7919 + 13) % vocab).collect();
    let embeds = phi.embed(&prompt).unwrap().unsqueeze(0).unwrap();
    let next = phi.embed(&[42]).unwrap().unsqueeze(0).unwrap();

    let mut chunked = phi.new_cache();
    let chunked_last = phi.forward(&embeds, &mut chunked).unwrap();
    let mut whole = phi.new_cache();
    let whole_logits = phi.forward_trace(&embeds, &mut whole).unwrap().logits;
    let whole_last = whole_logits
        .squeeze(0)
        .unwrap()
        .get(prompt.len() - 1)
        .unwrap();
    let step_chunked = phi.forward(&next, &mut chunked).unwrap();
    let step_whole = phi.forward(&next, &mut whole).unwrap();

    let argmax = |t: &Tensor| t.argmax(0).unwrap().to_scalar::<u32>().unwrap();
    for (what, got, want) in [
        ("last prompt position", &chunked_last, &whole_last),
        ("the step after it", &step_chunked, &step_whole),
    ] {
        let (range, _) = abs_diff(want, &want.zeros_like().unwrap()).unwrap();
        let (diff, _) = abs_diff(got, want).unwrap();
        assert!(
            diff <= 1e-4 * range,
            "{what}: differs by {diff} (range {range})"
        );
        assert_eq!(argmax(got), argmax(want), "{what}");
    }

    // An empty prompt is refused by name, and the cache keeps what it held.
    let held = chunked.len();
    let e = phi
        .forward(&embeds.narrow(1, 0, 0).unwrap(), &mut chunked)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nothing to feed"), "{e}");
    assert_eq!(chunked.len(), held);
}

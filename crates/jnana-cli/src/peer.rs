//! Peers timed on our workload: candle-transformers' own quantized Phi-2 (`quantized_phi`) on
//! the bundle's GGUF, with the same prompt ids and the same greedy loop as `jnana bench`, so the
//! two can be run alternately by `bench/peers.py`. (llama.cpp runs as its own program there.)

use crate::bench::{peak_rss_mb, print_speeds, prompt_ids, speeds, BenchArgs, Feed};
use anyhow::{Context, Result};
use candle_core::quantized::gguf_file;
use candle_core::Tensor;
use candle_transformers::models::quantized_phi::ModelWeights;
use jnana::bundle::{self, Role};
use std::time::Instant;

pub fn candle_phi(args: &BenchArgs) -> Result<()> {
    let (manifest, dir) = bundle::read_manifest(&args.bundle)?;
    let entry = manifest
        .file(Role::LanguageModel)
        .context("the bundle has no language model")?;
    let path = dir.join(&entry.name);
    let [prompt_tokens] = args.prompt_tokens[..] else {
        anyhow::bail!("--peer candle times one context at a time: give one --prompt-tokens");
    };
    let device = args.backend.candle_only(
        "candle's quantized_phi",
        "it is not our GPU engine (`jnana bench --backend wgpu` times that)",
    )?;
    let started = Instant::now();
    let mut file =
        std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let content = gguf_file::Content::read(&mut file)
        .with_context(|| format!("{} is not a GGUF file", path.display()))?;
    let vocab = content
        .metadata
        .get("tokenizer.ggml.tokens")
        .and_then(|v| v.to_vec().ok())
        .map_or(50_000, |t| t.len());
    let mut model = ModelWeights::from_gguf(content, &mut file, &device)?;
    let load_s = started.elapsed().as_secs_f64();
    let prompt = prompt_ids(prompt_tokens, vocab);
    let greedy =
        |logits: &Tensor| -> Result<u32> { Ok(logits.squeeze(0)?.argmax(0)?.to_scalar::<u32>()?) };
    let (prefill, decode) = speeds(args.runs, prompt.len(), args.decode_tokens, |feed| {
        // Position 0 starts a fresh cache.
        let (ids, at) = match feed {
            Feed::Prompt => (prompt.clone(), 0),
            Feed::Token(id, at) => (vec![id], at),
        };
        greedy(&model.forward(&Tensor::new(ids, &device)?.unsqueeze(0)?, at)?)
    })?;
    let report = serde_json::json!({
        "bundle": args.bundle.display().to_string(),
        "device": format!("candle-transformers quantized_phi ({device:?})"),
        "threads": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "load_s": load_s,
        "prompt_tokens": prompt.len(),
        "prefill_tok_per_s": prefill,
        "decode_tokens": args.decode_tokens,
        "decode_tok_per_s": decode,
        "peak_rss_mb": peak_rss_mb(),
        "runs": args.runs.max(1),
    });
    if args.json {
        println!("{report}");
    } else {
        println!("candle-transformers quantized_phi on {}", path.display());
        println!("load              {load_s:.2} s");
        print_speeds(&report);
    }
    Ok(())
}

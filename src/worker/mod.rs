//! The Web Worker that owns the models: it downloads bundles into storage, builds the models from
//! storage, and answers — one token at a time, returning to its event loop between tokens so a
//! Cancel message is heard.

mod download;
mod engine;
mod partner;
mod storage;
mod store;

use crate::bridge::Envelope;
use crate::protocol::{FromWorker, ToWorker};
use download::{Outcome, PauseFlag};
use engine::Engine;
use std::cell::{Cell, RefCell};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::DedicatedWorkerGlobalScope;

thread_local! {
    static ENGINE: RefCell<Engine> = RefCell::new(Engine::default());
    static PAUSE: PauseFlag = PauseFlag::default();
    static CANCEL: Cell<bool> = const { Cell::new(false) };
    static BUSY: Cell<bool> = const { Cell::new(false) };
    static DOWNLOADING: Cell<bool> = const { Cell::new(false) };
}

fn scope() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

/// Milliseconds on the worker's clock.
fn now_ms() -> f64 {
    scope().performance().map_or(0.0, |p| p.now())
}

/// Sends a message to the page.
pub fn post(message: &FromWorker) {
    let env = Envelope {
        json: message.to_json(),
        ..Envelope::default()
    };
    let (value, transfer) = env.to_js();
    let _ = scope().post_message_with_transfer(&value, &transfer);
}

fn error(during: &str, message: impl Into<String>) {
    post(&FromWorker::Error {
        during: during.into(),
        message: message.into(),
    });
}

/// The worker binaries' `main` (both builds: SIMD128 and relaxed SIMD).
pub fn main() {
    console_error_panic_hook::set_once();
    start();
}

pub fn start() {
    if scope().name() == partner::NAME {
        partner::serve_when_given();
        return;
    }
    let on_message =
        Closure::<dyn FnMut(web_sys::MessageEvent)>::new(|event: web_sys::MessageEvent| {
            match Envelope::from_js(&event.data()).and_then(|env| {
                serde_json::from_str::<ToWorker>(&env.json)
                    .map(|m| (m, env))
                    .map_err(|e| format!("an unreadable message: {e}"))
            }) {
                Ok((message, env)) => handle(message, env),
                Err(e) => error("message", e),
            }
        });
    scope().set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    // Messages the page posted while the wasm was still compiling were dropped (no handler yet),
    // so the worker speaks first.
    handle(ToWorker::Hello, Envelope::default());
}

async fn storage_report() {
    post(&FromWorker::Storage(storage::estimate().await));
}

/// What this browser offers and what storage holds.
async fn ready_report() {
    post(&FromWorker::Ready {
        webgpu: engine::has_webgpu(),
        stored: store::list().await,
        storage: storage::estimate().await,
    });
}

fn handle(message: ToWorker, env: Envelope) {
    match message {
        ToWorker::Hello => wasm_bindgen_futures::spawn_local(ready_report()),
        ToWorker::Download { manifest_url } => {
            if DOWNLOADING.with(|d| d.replace(true)) {
                return;
            }
            PAUSE.with(|p| p.reset());
            wasm_bindgen_futures::spawn_local(async move {
                let pause = PAUSE.with(|p| p.clone());
                match download::bundle(&manifest_url, &pause).await {
                    Ok(Outcome::Complete) => post(&FromWorker::Downloaded { manifest_url }),
                    Ok(Outcome::Paused) => post(&FromWorker::Paused),
                    Err(e) => error("download", e),
                }
                DOWNLOADING.with(|d| d.set(false));
                storage_report().await;
            });
        }
        ToWorker::Pause => PAUSE.with(|p| p.raise()),
        ToWorker::Load {
            manifest_url,
            compute,
        } => wasm_bindgen_futures::spawn_local(async move {
            // The previous models go first: a bundle on the GPU is not held twice.
            ENGINE.with(|e| e.borrow_mut().unload());
            match engine::load(&manifest_url, compute).await {
                Ok((model, conversation)) => {
                    ENGINE.with(|e| e.borrow_mut().set(&manifest_url, model, conversation))
                }
                Err(e) => error("load", e),
            }
        }),
        ToWorker::Delete { manifest_url } => wasm_bindgen_futures::spawn_local(async move {
            ENGINE.with(|e| {
                let mut e = e.borrow_mut();
                if e.manifest_url.as_deref() == Some(manifest_url.as_str()) {
                    e.unload();
                }
            });
            if let Err(e) = store::delete(&manifest_url).await {
                error("delete", e);
            }
            ready_report().await;
        }),
        ToWorker::Transcribe { pcm } => {
            let audio = match pcm {
                Some(info) => engine::pcm_input(env.pcm.unwrap_or_default(), info),
                None => jnana::pipeline::AudioInput::Encoded(env.bytes.unwrap_or_default()),
            };
            wasm_bindgen_futures::spawn_local(async move {
                let done =
                    with_conversation(async |model, c| engine::transcribe(model, c, &audio).await)
                        .await;
                if let Err(e) = done.and_then(|r| r) {
                    error("transcribe", e);
                }
            });
        }
        ToWorker::Generate {
            text,
            transcript,
            pcm,
            params,
        } => {
            if BUSY.with(|b| b.replace(true)) {
                error(
                    "generate",
                    "still answering the previous question: press Stop first",
                );
                return;
            }
            CANCEL.with(|c| c.set(false));
            let request = engine::request(
                text,
                transcript,
                env.bytes,
                pcm.map(|p| (env.pcm.unwrap_or_default(), p)),
            );
            let params = engine::params(&params);
            wasm_bindgen_futures::spawn_local(async move {
                generate(request, params).await;
                BUSY.with(|b| b.set(false));
            });
        }
        ToWorker::Cancel => CANCEL.with(|c| c.set(true)),
        ToWorker::NewConversation => ENGINE.with(|e| {
            let mut e = e.borrow_mut();
            let loaded = e.model.is_some();
            match e.conversation.as_mut() {
                Some(c) => c.reset(),
                // An answer in progress holds it.
                None if loaded => error(
                    "new conversation",
                    "still answering: press Stop first, then start a new conversation",
                ),
                None => {}
            }
        }),
    }
}

/// Runs `work` with the loaded model and the conversation taken out of the engine (the work
/// spans awaits: GPU results arrive through the event loop). The conversation goes back unless
/// the model was unloaded or replaced meanwhile.
async fn with_conversation<T>(
    work: impl AsyncFnOnce(&jnana::Jnana, &mut jnana::Conversation) -> T,
) -> Result<T, String> {
    let (model, conversation) = ENGINE.with(|e| {
        let mut e = e.borrow_mut();
        (e.model.clone(), e.conversation.take())
    });
    let model = model.ok_or("no model is loaded yet")?;
    let mut conversation =
        conversation.ok_or("still answering the previous question: press Stop first")?;
    let out = work(&model, &mut conversation).await;
    ENGINE.with(|e| {
        let mut e = e.borrow_mut();
        if e.model
            .as_ref()
            .is_some_and(|m| std::rc::Rc::ptr_eq(m, &model))
        {
            e.conversation = Some(conversation);
        }
    });
    Ok(out)
}

async fn generate(request: jnana::Request, params: jnana::GenerationParams) {
    let started = now_ms();
    let done =
        with_conversation(async |model, c| answer(model, c, request, params, started).await).await;
    if let Err(e) = done {
        error("generate", e);
    }
}

async fn answer(
    model: &jnana::Jnana,
    c: &mut jnana::Conversation,
    request: jnana::Request,
    params: jnana::GenerationParams,
    started: f64,
) {
    let on_gpu_hint = |e: jnana::Error| match e {
        jnana::Error::Engine(m) => {
            format!("{m}. To go on without the GPU, choose “CPU” under Settings → Compute on.")
        }
        other => other.to_string(),
    };
    let mut answering = match c.begin_async(model, &request, &params).await {
        Ok(a) => a,
        Err(e) => return error("generate", on_gpu_hint(e)),
    };
    let mut first_token = None;
    loop {
        if CANCEL.with(|c| c.get()) {
            answering.cancel();
        }
        match answering.next_async(model, c).await {
            Ok(Some(event)) => {
                first_token.get_or_insert_with(now_ms);
                post(&FromWorker::Token {
                    id: event.id,
                    text: event.text,
                    index: event.index,
                });
            }
            Ok(None) => break,
            Err(e) => return error("generate", on_gpu_hint(e)),
        }
        // Back to the event loop, so Cancel can arrive.
        gloo_timers::future::TimeoutFuture::new(0).await;
    }
    let answer = answering.finish(c);
    if answer.finish.is_none() {
        // The fixed reply to an empty request arrives as one piece.
        post(&FromWorker::Token {
            id: None,
            text: Some(answer.text.clone()),
            index: 0,
        });
    }
    let end = now_ms();
    let first = first_token.unwrap_or(end);
    let decode_s = ((end - first) / 1000.0).max(1e-9);
    post(&FromWorker::Done {
        finish: answer
            .finish
            .map(|f| {
                serde_json::to_value(f)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            })
            .unwrap_or_else(|| "reply".into()),
        tokens_per_second: answer.tokens.len().saturating_sub(1) as f64 / decode_s,
        first_token_ms: first - started,
        tokens: answer.tokens,
        transcript: answer.transcript,
        prompt_positions: answer.prompt_positions,
        dropped_turns: answer.dropped_turns,
    });
}

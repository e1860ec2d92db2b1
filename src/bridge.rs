//! How messages cross `postMessage`: `[json, Uint8Array?, Float32Array?]`, the typed arrays
//! transferred rather than copied. Used on both sides; the page side also wraps the `Worker`.

use crate::protocol::{FileInfo, FromWorker, ToWorker};
use js_sys::{Array, Float32Array, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// A message's JSON and attachments.
#[derive(Debug, Default)]
pub struct Envelope {
    pub json: String,
    pub bytes: Option<Vec<u8>>,
    pub pcm: Option<Vec<f32>>,
}

impl Envelope {
    /// The JS value to post and the list of buffers to transfer with it.
    pub fn to_js(&self) -> (Array, Array) {
        let message = Array::new();
        let transfer = Array::new();
        message.push(&JsValue::from_str(&self.json));
        match &self.bytes {
            Some(b) => {
                let a = Uint8Array::from(b.as_slice());
                transfer.push(&a.buffer());
                message.push(&a);
            }
            None => {
                message.push(&JsValue::NULL);
            }
        }
        match &self.pcm {
            Some(p) => {
                let a = Float32Array::from(p.as_slice());
                transfer.push(&a.buffer());
                message.push(&a);
            }
            None => {
                message.push(&JsValue::NULL);
            }
        }
        (message, transfer)
    }

    pub fn from_js(value: &JsValue) -> Result<Self, String> {
        let array: &Array = value
            .dyn_ref()
            .ok_or_else(|| "a message that is not an array".to_string())?;
        let json = array
            .get(0)
            .as_string()
            .ok_or_else(|| "a message without JSON".to_string())?;
        let bytes = array.get(1).dyn_ref::<Uint8Array>().map(|a| a.to_vec());
        let pcm = array.get(2).dyn_ref::<Float32Array>().map(|a| a.to_vec());
        Ok(Self { json, bytes, pcm })
    }
}

/// A JS exception's `message` (its debug form when it has none).
pub fn js_message(e: &JsValue) -> String {
    js_sys::Reflect::get(e, &"message".into())
        .ok()
        .and_then(|m| m.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

/// The page's handle on the model worker.
/// The model worker's script: the relaxed-SIMD build where this browser validates relaxed SIMD
/// (its Q4_K kernel is about twice as fast), else the SIMD128 one.
pub fn worker_script() -> &'static str {
    // (module (func (result v128) i32.const 1 i8x16.splat i32.const 2 i8x16.splat
    //   i8x16.relaxed_swizzle)), as the wasm-feature-detect package probes it.
    const RELAXED_PROBE: [u8; 36] = [
        0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 15, 1, 13, 0, 65, 1,
        253, 15, 65, 2, 253, 15, 253, 128, 2, 11,
    ];
    let probe = Uint8Array::from(&RELAXED_PROBE[..]);
    match js_sys::WebAssembly::validate(&probe) {
        Ok(true) => "./jnana-worker-relaxed_loader.js",
        _ => "./jnana-worker_loader.js",
    }
}

pub struct ModelWorker {
    worker: web_sys::Worker,
    _on_message: Closure<dyn FnMut(web_sys::MessageEvent)>,
    _on_error: Closure<dyn FnMut(web_sys::Event)>,
}

impl ModelWorker {
    /// Starts the worker script (a module) and routes its messages to `on_message`.
    pub fn spawn(
        script_url: &str,
        on_message: impl Fn(FromWorker, Envelope) + 'static,
        on_failure: impl Fn(String) + 'static,
    ) -> Result<Self, String> {
        let options = web_sys::WorkerOptions::new();
        options.set_type(web_sys::WorkerType::Module);
        let worker = web_sys::Worker::new_with_options(script_url, &options)
            .map_err(|e| format!("cannot start the model worker: {e:?}"))?;
        let on_message = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(
            move |event: web_sys::MessageEvent| {
                let decoded = Envelope::from_js(&event.data()).and_then(|env| {
                    serde_json::from_str::<FromWorker>(&env.json)
                        .map(|m| (m, env))
                        .map_err(|e| format!("an unreadable message from the worker: {e}"))
                });
                match decoded {
                    Ok((message, env)) => on_message(message, env),
                    Err(e) => web_sys::console::error_1(&e.into()),
                }
            },
        );
        worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        let on_error = Closure::<dyn FnMut(web_sys::Event)>::new(move |event: web_sys::Event| {
            web_sys::console::error_2(&"model worker failed".into(), &event);
            let detail = event
                .dyn_ref::<web_sys::ErrorEvent>()
                .map(|e| e.message())
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "it could not start (is WebAssembly allowed here?)".into());
            on_failure(format!("the model worker stopped: {detail}"));
        });
        worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        Ok(Self {
            worker,
            _on_message: on_message,
            _on_error: on_error,
        })
    }

    pub fn send(&self, message: &ToWorker, bytes: Option<Vec<u8>>, pcm: Option<Vec<f32>>) {
        let env = Envelope {
            json: message.to_json(),
            bytes,
            pcm,
        };
        let (value, transfer) = env.to_js();
        if let Err(e) = self.worker.post_message_with_transfer(&value, &transfer) {
            web_sys::console::error_2(&"cannot reach the model worker".into(), &e);
        }
    }
}

/// What the model panel shows of a manifest's files.
pub fn file_infos(manifest: &jnana::bundle::Manifest) -> Vec<FileInfo> {
    manifest
        .files
        .iter()
        .map(|f| FileInfo {
            name: f.name.clone(),
            role: serde_json::to_value(f.role)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            size: f.size,
        })
        .collect()
}

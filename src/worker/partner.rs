//! The second CPU worker. A wasm instance here has one thread (shared-memory wasm threads need
//! the standard library rebuilt with atomics), so on a page that is cross-origin isolated the
//! model worker starts a second copy of itself, which holds half of every packed Phi-2 weight
//! (`jnana::weights::Partner`) and multiplies it while this one does the other half.
//!
//! The two talk through one `SharedArrayBuffer`: a header of 32-bit words (request and answer
//! counters, a command, its arguments, a status) and a data area for the bytes and floats each
//! command carries. Both sides block in `Atomics.wait`, which dedicated workers may do, so a
//! matmul is a plain function call on this side and never returns to the event loop.

use super::scope;
use candle_core::quantized::GgmlDType;
use gloo_timers::future::TimeoutFuture;
use jnana::weights::{Partner, PartnerHost, TileShape};
use js_sys::{Atomics, Float32Array, Int32Array, SharedArrayBuffer, Uint8Array};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// The worker name that makes a model worker a partner.
pub const NAME: &str = "jnana-partner";

const HEADER_BYTES: u32 = 128;
/// A 512-position prompt chunk's widest input (Phi-2's fc2: 512 × 10240 floats) with room.
const DATA_BYTES: u32 = 32 << 20;

// Header words.
const REQUEST: u32 = 0;
const DONE: u32 = 1;
const COMMAND: u32 = 2;
const STATUS: u32 = 3;
const READY: u32 = 4;
const ARGS: u32 = 8;

// Commands.
const ADOPT: i32 = 1;
const MATMUL: i32 = 2;
const RELEASE: i32 = 3;

/// How long this worker waits for one answer before it gives up on the partner.
const ANSWER_LIMIT_MS: f64 = 120_000.0;

/// The header and data area, as both sides see them.
struct Views {
    ctl: Int32Array,
    bytes: Uint8Array,
    floats: Float32Array,
}

impl Views {
    fn new(buffer: &SharedArrayBuffer) -> Self {
        Self {
            ctl: Int32Array::new_with_byte_offset_and_length(buffer, 0, HEADER_BYTES / 4),
            bytes: Uint8Array::new_with_byte_offset_and_length(buffer, HEADER_BYTES, DATA_BYTES),
            floats: Float32Array::new_with_byte_offset_and_length(
                buffer,
                HEADER_BYTES,
                DATA_BYTES / 4,
            ),
        }
    }

    fn get(&self, word: u32) -> i32 {
        Atomics::load(&self.ctl, word).unwrap_or(0)
    }

    fn set(&self, word: u32, value: i32) {
        let _ = Atomics::store(&self.ctl, word, value);
    }

    fn arg(&self, i: u32) -> usize {
        self.get(ARGS + i) as usize
    }

    fn fits_floats(len: usize) -> Result<(), String> {
        if len * 4 > DATA_BYTES as usize {
            return Err(format!(
                "{len} values do not fit the {} MiB shared buffer",
                DATA_BYTES >> 20
            ));
        }
        Ok(())
    }
}

/// This worker's end: a [`Partner`] for the model crate.
pub struct Channel {
    worker: web_sys::Worker,
    views: Views,
    sent: Cell<i32>,
    /// Weights the partner holds rows of.
    holds: Cell<usize>,
}

/// The block types packed weights have, as header words.
const DTYPES: [GgmlDType; 2] = [GgmlDType::Q4K, GgmlDType::Q8_0];

impl Channel {
    fn send(&self, command: i32, args: &[usize]) {
        for (i, a) in args.iter().enumerate() {
            self.views.set(ARGS + i as u32, *a as i32);
        }
        self.views.set(COMMAND, command);
        let seq = self.sent.get() + 1;
        self.sent.set(seq);
        self.views.set(REQUEST, seq);
        let _ = Atomics::notify(&self.views.ctl, REQUEST);
    }

    /// Blocks until the partner answered the last request.
    fn answer(&self) -> Result<(), String> {
        let seq = self.sent.get();
        let started = js_sys::Date::now();
        loop {
            let done = self.views.get(DONE);
            if done == seq {
                break;
            }
            let _ = Atomics::wait_with_timeout(&self.views.ctl, DONE, done, 1_000.0);
            if js_sys::Date::now() - started > ANSWER_LIMIT_MS {
                return Err(format!(
                    "it did not answer within {} s (it may have run out of memory)",
                    ANSWER_LIMIT_MS / 1000.0
                ));
            }
        }
        if self.views.get(STATUS) != 0 {
            let len = self.views.arg(0).min(4096);
            let mut text = vec![0u8; len];
            self.views.bytes.subarray(0, len as u32).copy_to(&mut text);
            return Err(String::from_utf8_lossy(&text).into_owned());
        }
        Ok(())
    }
}

impl Partner for Channel {
    fn adopt(
        &self,
        id: u64,
        dtype: GgmlDType,
        n: usize,
        k: usize,
        tiles: &[u8],
    ) -> Result<(), String> {
        let code = DTYPES
            .iter()
            .position(|d| *d == dtype)
            .ok_or_else(|| format!("{dtype:?} weights are not packed"))?;
        let mut offset = 0;
        for chunk in tiles.chunks(DATA_BYTES as usize) {
            self.views
                .bytes
                .subarray(0, chunk.len() as u32)
                .copy_from(chunk);
            let args = [id as usize, code, n, k, tiles.len(), offset, chunk.len()];
            self.send(ADOPT, &args);
            self.answer()?;
            offset += chunk.len();
        }
        self.holds.set(self.holds.get() + 1);
        Ok(())
    }

    fn start(&self, id: u64, x: &[f32], m: usize) -> Result<(), String> {
        Views::fits_floats(x.len())?;
        self.views.floats.subarray(0, x.len() as u32).copy_from(x);
        self.send(MATMUL, &[id as usize, m, x.len()]);
        Ok(())
    }

    fn finish(&self, out: &mut [f32]) -> Result<(), String> {
        self.answer()?;
        self.views.floats.subarray(0, out.len() as u32).copy_to(out);
        Ok(())
    }

    fn release(&self, id: u64) {
        self.send(RELEASE, &[id as usize]);
        if self.answer().is_ok() {
            self.holds.set(self.holds.get().saturating_sub(1));
        }
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.worker.terminate();
    }
}

thread_local! {
    static RUNNING: RefCell<Option<Rc<Channel>>> = const { RefCell::new(None) };
}

/// Whether this page may share memory between workers.
fn isolated() -> bool {
    js_sys::Reflect::get(&js_sys::global(), &"crossOriginIsolated".into())
        .map(|v| v.is_truthy())
        .unwrap_or(false)
}

/// Starts the partner, or keeps the one running, and hands it to the model crate; why not,
/// otherwise (the models then run in this worker alone).
pub async fn ensure() -> Result<(), String> {
    if RUNNING.with(|r| r.borrow().is_some()) {
        return Ok(());
    }
    if !isolated() {
        return Err(
            "This page is not cross-origin isolated (it is served without the \
                    Cross-Origin-Opener-Policy and -Embedder-Policy headers), so the CPU \
                    path runs in one worker."
                .into(),
        );
    }
    if scope().navigator().hardware_concurrency() < 2.0 {
        return Err("This device reports one CPU core: the CPU path runs in one worker.".into());
    }
    let channel = spawn().await.map_err(|e| {
        format!("A second CPU worker could not start ({e}); the CPU path runs in one worker.")
    })?;
    let channel = Rc::new(channel);
    jnana::weights::set_partner(Some(channel.clone() as Rc<dyn Partner>));
    RUNNING.with(|r| *r.borrow_mut() = Some(channel));
    Ok(())
}

/// How many weights the running partner holds rows of.
pub fn shared_weights() -> usize {
    RUNNING.with(|r| r.borrow().as_ref().map_or(0, |c| c.holds.get()))
}

/// Stops the partner (the models on the GPU need none). Weights still split with it fail with
/// a clear error instead of waiting for it.
pub fn stop() {
    jnana::weights::set_partner(None);
    RUNNING.with(|r| r.borrow_mut().take());
}

async fn spawn() -> Result<Channel, String> {
    let options = web_sys::WorkerOptions::new();
    options.set_type(web_sys::WorkerType::Module);
    options.set_name(NAME);
    let script = scope().location().href();
    let worker = web_sys::Worker::new_with_options(&script, &options)
        .map_err(|e| crate::bridge::js_message(&e))?;
    // The partner speaks first (a message posted before its wasm runs would be lost).
    let greeted = Rc::new(Cell::new(false));
    let on_message = {
        let greeted = greeted.clone();
        Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |_| greeted.set(true))
    };
    worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    let buffer = SharedArrayBuffer::new(HEADER_BYTES + DATA_BYTES);
    let views = Views::new(&buffer);
    wait_for(|| greeted.get(), "it did not start").await?;
    worker.set_onmessage(None);
    drop(on_message);
    worker
        .post_message(&buffer)
        .map_err(|e| crate::bridge::js_message(&e))?;
    wait_for(
        || views.get(READY) == 1,
        "it did not take the shared buffer",
    )
    .await?;
    Ok(Channel {
        worker,
        views,
        sent: Cell::new(0),
        holds: Cell::new(0),
    })
}

/// Polls `done` on the event loop for up to a minute (compiling the wasm takes a few seconds).
async fn wait_for(done: impl Fn() -> bool, otherwise: &str) -> Result<(), String> {
    for _ in 0..3000 {
        if done() {
            return Ok(());
        }
        TimeoutFuture::new(20).await;
    }
    Err(otherwise.into())
}

/// The partner's side: greets its parent, takes the shared buffer and serves it for good.
pub fn serve_when_given() {
    let on_message =
        Closure::<dyn FnMut(web_sys::MessageEvent)>::new(|event: web_sys::MessageEvent| {
            if let Ok(buffer) = event.data().dyn_into::<SharedArrayBuffer>() {
                serve(Views::new(&buffer));
            }
        });
    scope().set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    let _ = scope().post_message(&JsValue::from_str(NAME));
}

thread_local! {
    /// The header, for the panic hook to answer the request in progress with the panic.
    static SERVING: RefCell<Option<Int32Array>> = const { RefCell::new(None) };
}

fn serve(views: Views) {
    SERVING.with(|s| *s.borrow_mut() = Some(views.ctl.clone()));
    let bytes = views.bytes.clone();
    std::panic::set_hook(Box::new(move |info| {
        console_error_panic_hook::hook(info);
        SERVING.with(|s| {
            if let Some(ctl) = s.borrow().as_ref() {
                let text = info.to_string();
                let text = &text.as_bytes()[..text.len().min(4096)];
                bytes.subarray(0, text.len() as u32).copy_from(text);
                let _ = Atomics::store(ctl, ARGS, text.len() as i32);
                let _ = Atomics::store(ctl, STATUS, 1);
                let seq = Atomics::load(ctl, REQUEST).unwrap_or(0);
                let _ = Atomics::store(ctl, DONE, seq);
                let _ = Atomics::notify(ctl, DONE);
            }
        });
    }));
    let mut host = PartnerHost::default();
    views.set(READY, 1);
    let mut seen = 0;
    loop {
        let _ = Atomics::wait(&views.ctl, REQUEST, seen);
        let seq = views.get(REQUEST);
        if seq == seen {
            continue;
        }
        seen = seq;
        let outcome = match views.get(COMMAND) {
            ADOPT => adopt(&views, &mut host),
            MATMUL => matmul(&views, &host),
            RELEASE => {
                host.release(views.arg(0) as u64);
                Ok(())
            }
            other => Err(format!("an unknown command {other}")),
        };
        match outcome {
            Ok(()) => views.set(STATUS, 0),
            Err(e) => {
                let text = &e.as_bytes()[..e.len().min(4096)];
                views.bytes.subarray(0, text.len() as u32).copy_from(text);
                views.set(ARGS, text.len() as i32);
                views.set(STATUS, 1);
            }
        }
        views.set(DONE, seq);
        let _ = Atomics::notify(&views.ctl, DONE);
    }
}

fn adopt(views: &Views, host: &mut PartnerHost) -> Result<(), String> {
    let (id, code) = (views.arg(0) as u64, views.arg(1));
    let dtype = *DTYPES
        .get(code)
        .ok_or_else(|| format!("an unknown block type {code}"))?;
    let shape = TileShape {
        dtype,
        n: views.arg(2),
        k: views.arg(3),
    };
    let (offset, len) = (views.arg(5), views.arg(6));
    host.adopt_part(id, shape, offset, len, |dst| {
        views.bytes.subarray(0, len as u32).copy_to(dst)
    })
}

fn matmul(views: &Views, host: &PartnerHost) -> Result<(), String> {
    let (id, m, len) = (views.arg(0) as u64, views.arg(1), views.arg(2));
    Views::fits_floats(len)?;
    let mut x = vec![0f32; len];
    views.floats.subarray(0, len as u32).copy_to(&mut x);
    let y = host.matmul(id, &x, m)?;
    Views::fits_floats(y.len())?;
    views.floats.subarray(0, y.len() as u32).copy_from(&y);
    Ok(())
}

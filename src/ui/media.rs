//! Browser media for the composer: files to bytes, audio files and microphone recordings to PCM
//! (WebAudio decodes; the model worker resamples), picture thumbnails.

use js_sys::{Array, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{AudioBuffer, AudioContext, Blob, MediaRecorder, MediaStream};

/// Decoded audio, interleaved, ready for the worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Pcm {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
    pub channels: usize,
}

fn js_error(e: JsValue) -> String {
    crate::bridge::js_message(&e)
}

pub async fn blob_bytes(blob: &Blob) -> Result<Vec<u8>, String> {
    let buffer = JsFuture::from(blob.array_buffer())
        .await
        .map_err(js_error)?;
    Ok(Uint8Array::new(&buffer).to_vec())
}

/// Decodes any audio the browser can play (WAV, MP3, OGG, M4A, WebM/Opus) into PCM.
pub async fn decode_audio(bytes: &[u8]) -> Result<Pcm, String> {
    if bytes.is_empty() {
        return Err("the recording is empty".into());
    }
    let ctx = AudioContext::new().map_err(js_error)?;
    let data = Uint8Array::from(bytes).buffer();
    let decoded = JsFuture::from(ctx.decode_audio_data(&data).map_err(js_error)?)
        .await
        .map_err(|e| format!("this audio cannot be decoded: {}", js_error(e)))?;
    let _ = ctx.close();
    let buffer: AudioBuffer = decoded.unchecked_into();
    let channels = buffer.number_of_channels() as usize;
    let frames = buffer.length() as usize;
    let planes: Vec<Vec<f32>> = (0..channels)
        .map(|c| buffer.get_channel_data(c as u32).map_err(js_error))
        .collect::<Result<_, _>>()?;
    let mut samples = Vec::with_capacity(frames * channels);
    for i in 0..frames {
        for plane in &planes {
            samples.push(plane[i]);
        }
    }
    Ok(Pcm {
        samples,
        sample_rate: buffer.sample_rate() as u32,
        channels,
    })
}

/// A microphone recording in progress, with a level for the meter.
pub struct Recording {
    recorder: MediaRecorder,
    stream: MediaStream,
    ctx: AudioContext,
    analyser: web_sys::AnalyserNode,
    chunks: std::rc::Rc<std::cell::RefCell<Vec<Blob>>>,
    _on_data: Closure<dyn FnMut(web_sys::BlobEvent)>,
}

impl Recording {
    pub async fn start() -> Result<Self, String> {
        let window = web_sys::window().ok_or("no window")?;
        let devices = window
            .navigator()
            .media_devices()
            .map_err(|_| "this browser gives no access to a microphone".to_string())?;
        let constraints = web_sys::MediaStreamConstraints::new();
        constraints.set_audio(&JsValue::TRUE);
        let stream: MediaStream = JsFuture::from(
            devices
                .get_user_media_with_constraints(&constraints)
                .map_err(js_error)?,
        )
        .await
        .map_err(|e| format!("the microphone is not available: {}", js_error(e)))?
        .unchecked_into();
        let ctx = AudioContext::new().map_err(js_error)?;
        let source = ctx.create_media_stream_source(&stream).map_err(js_error)?;
        let analyser = ctx.create_analyser().map_err(js_error)?;
        source
            .connect_with_audio_node(&analyser)
            .map_err(js_error)?;
        let recorder = MediaRecorder::new_with_media_stream(&stream).map_err(js_error)?;
        let chunks = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let sink = chunks.clone();
        let on_data =
            Closure::<dyn FnMut(web_sys::BlobEvent)>::new(move |e: web_sys::BlobEvent| {
                if let Some(b) = e.data() {
                    sink.borrow_mut().push(b);
                }
            });
        recorder.set_ondataavailable(Some(on_data.as_ref().unchecked_ref()));
        recorder.start().map_err(js_error)?;
        Ok(Self {
            recorder,
            stream,
            ctx,
            analyser,
            chunks,
            _on_data: on_data,
        })
    }

    /// Peak level of the last few milliseconds, 0..1.
    pub fn level(&self) -> f64 {
        let mut buf = vec![0f32; self.analyser.fft_size() as usize];
        self.analyser.get_float_time_domain_data(&mut buf);
        buf.iter().fold(0f32, |m, v| m.max(v.abs())) as f64
    }

    /// Stops and decodes the recording.
    pub async fn stop(self) -> Result<Pcm, String> {
        let stopped = js_sys::Promise::new(&mut |resolve, _| {
            self.recorder.set_onstop(Some(&resolve));
        });
        self.recorder.stop().map_err(js_error)?;
        JsFuture::from(stopped).await.map_err(js_error)?;
        for track in self.stream.get_tracks().iter() {
            track.unchecked_into::<web_sys::MediaStreamTrack>().stop();
        }
        let _ = self.ctx.close();
        let parts = Array::new();
        for b in self.chunks.borrow().iter() {
            parts.push(b);
        }
        let blob = Blob::new_with_blob_sequence(&parts).map_err(js_error)?;
        decode_audio(&blob_bytes(&blob).await?).await
    }
}

/// An object URL for a picture's thumbnail.
pub fn object_url(bytes: &[u8]) -> Option<String> {
    let parts = Array::new();
    parts.push(&Uint8Array::from(bytes));
    let blob = Blob::new_with_u8_array_sequence(&parts).ok()?;
    web_sys::Url::create_object_url_with_blob(&blob).ok()
}

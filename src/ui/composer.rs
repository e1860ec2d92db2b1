//! The composer: text (Enter sends, Shift+Enter breaks the line), a picture (file picker,
//! drag-and-drop or paste, shown as a removable thumbnail), and a spoken question (microphone
//! with a level meter, or an audio file) whose transcript is shown and can be edited before
//! sending. Stop and New conversation live here too.

use super::media::{self, Recording};
use super::state::{send, AppState, Message, Picture, Stage};
use crate::protocol::{PcmInfo, ToWorker};
use leptos::prelude::*;
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::JsCast;

thread_local! {
    static RECORDING: RefCell<Option<Recording>> = const { RefCell::new(None) };
}

fn next_id(state: AppState) -> usize {
    state.messages.with(|m| m.last().map_or(0, |l| l.id + 1))
}

/// Sends the composed question; the answer streams into a new assistant bubble.
fn ask(state: AppState) {
    if state.generating.get_untracked() || state.stage.get_untracked() != Stage::Ready {
        return;
    }
    let text = state.draft.get_untracked();
    let text = (!text.trim().is_empty()).then_some(text);
    let transcript = state
        .transcript
        .get_untracked()
        .filter(|t| !t.trim().is_empty());
    let picture = state.picture.get_untracked();
    let id = next_id(state);
    state.messages.update(|m| {
        m.push(Message {
            id,
            from_user: true,
            text: text.clone().unwrap_or_default(),
            image_url: picture.as_ref().and_then(|p| p.url.clone()),
            heard: transcript.clone(),
            ids: Vec::new(),
            stats: None,
            done: true,
            failed: false,
        });
        m.push(Message {
            id: id + 1,
            from_user: false,
            text: String::new(),
            image_url: None,
            heard: None,
            ids: Vec::new(),
            stats: None,
            done: false,
            failed: false,
        });
    });
    state.generating.set(true);
    state.error.set(None);
    send(
        ToWorker::Generate {
            text,
            transcript,
            pcm: None,
            params: state.params.get_untracked(),
        },
        picture.map(|p| p.bytes),
        None,
    );
    state.draft.set(String::new());
    state.picture.set(None);
    state.transcript.set(None);
}

fn attach_picture(state: AppState, file: web_sys::File) {
    leptos::task::spawn_local(async move {
        match media::blob_bytes(&file).await {
            Ok(bytes) => state.picture.set(Some(Picture {
                url: media::object_url(&bytes),
                name: file.name(),
                bytes,
            })),
            Err(e) => state
                .error
                .set(Some(format!("cannot read the picture: {e}"))),
        }
    });
}

fn hear(state: AppState, pcm: media::Pcm) {
    if pcm.samples.is_empty() {
        state.error.set(Some("the recording is empty".into()));
        return;
    }
    state.transcribing.set(true);
    state.error.set(None);
    let info = PcmInfo {
        sample_rate: pcm.sample_rate,
        channels: pcm.channels,
    };
    send(
        ToWorker::Transcribe { pcm: Some(info) },
        None,
        Some(pcm.samples),
    );
}

/// Files the model crate decodes itself, so the browser hears exactly what the native CLI hears
/// (WebAudio would resample to the audio device's rate with its own filter first).
fn decoded_by_model(file: &web_sys::File) -> bool {
    let name = file.name().to_ascii_lowercase();
    [".wav", ".mp3", ".ogg", ".oga", ".flac"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

fn attach_audio_file(state: AppState, file: web_sys::File) {
    leptos::task::spawn_local(async move {
        if decoded_by_model(&file) {
            match media::blob_bytes(&file).await {
                Ok(bytes) if bytes.is_empty() => {
                    state.error.set(Some(format!("{} is empty", file.name())))
                }
                Ok(bytes) => {
                    state.transcribing.set(true);
                    state.error.set(None);
                    send(ToWorker::Transcribe { pcm: None }, Some(bytes), None);
                }
                Err(e) => state.error.set(Some(format!("{}: {e}", file.name()))),
            }
            return;
        }
        let decoded = match media::blob_bytes(&file).await {
            Ok(bytes) => media::decode_audio(&bytes).await,
            Err(e) => Err(e),
        };
        match decoded {
            Ok(pcm) => hear(state, pcm),
            Err(e) => state.error.set(Some(format!("{}: {e}", file.name()))),
        }
    });
}

fn first_file(ev: &leptos::ev::Event) -> Option<web_sys::File> {
    let input: web_sys::HtmlInputElement = ev.target()?.dyn_into().ok()?;
    let file = input.files()?.get(0);
    input.set_value("");
    file
}

#[component]
pub fn Composer() -> impl IntoView {
    let state = expect_context::<AppState>();
    let recording = RwSignal::new(false);
    let level = RwSignal::new(0.0f64);
    let ready = move || state.stage.get() == Stage::Ready;

    let toggle_recording = move |_| {
        if recording.get_untracked() {
            recording.set(false);
            if let Some(r) = RECORDING.with(|slot| slot.borrow_mut().take()) {
                leptos::task::spawn_local(async move {
                    match r.stop().await {
                        Ok(pcm) => hear(state, pcm),
                        Err(e) => state.error.set(Some(e)),
                    }
                });
            }
            return;
        }
        leptos::task::spawn_local(async move {
            match Recording::start().await {
                Ok(r) => {
                    RECORDING.with(|slot| *slot.borrow_mut() = Some(r));
                    recording.set(true);
                    let handle = Rc::new(RefCell::new(None::<gloo_timers::callback::Interval>));
                    let keep = handle.clone();
                    *handle.borrow_mut() =
                        Some(gloo_timers::callback::Interval::new(50, move || {
                            let l =
                                RECORDING.with(|slot| slot.borrow().as_ref().map(|r| r.level()));
                            match l {
                                Some(l) => level.set(l),
                                None => {
                                    level.set(0.0);
                                    keep.borrow_mut().take();
                                }
                            }
                        }));
                }
                Err(e) => state.error.set(Some(e)),
            }
        });
    };

    let on_key = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
            ev.prevent_default();
            ask(state);
        }
    };
    let on_paste = move |ev: leptos::ev::ClipboardEvent| {
        let file = ev
            .clipboard_data()
            .and_then(|d| d.files())
            .and_then(|f| f.get(0));
        if let Some(file) = file.filter(|f| f.type_().starts_with("image/")) {
            ev.prevent_default();
            attach_picture(state, file);
        }
    };
    let on_drop = move |ev: leptos::ev::DragEvent| {
        ev.prevent_default();
        let Some(files) = ev.data_transfer().and_then(|d| d.files()) else {
            return;
        };
        for i in 0..files.length() {
            if let Some(file) = files.get(i) {
                if file.type_().starts_with("image/") {
                    attach_picture(state, file);
                } else if file.type_().starts_with("audio/") {
                    attach_audio_file(state, file);
                }
            }
        }
    };

    view! {
        <section class="composer" aria-label="Ask" on:dragover=|ev: leptos::ev::DragEvent| ev.prevent_default() on:drop=on_drop>
            <Show when=move || state.picture.get().is_some()>
                <div class="attachment" data-testid="picture">
                    <img class="thumb" alt="Picture to ask about" src=move || state.picture.get().and_then(|p| p.url).unwrap_or_default()/>
                    <span>{move || state.picture.get().map(|p| p.name).unwrap_or_default()}</span>
                    <button class="icon" aria-label="Remove the picture" on:click=move |_| state.picture.set(None)>"✕"</button>
                </div>
            </Show>
            <Show when=move || state.transcribing.get()>
                <p class="note" role="status">"Listening to your recording…"</p>
            </Show>
            <Show when=move || state.transcript.get().is_some()>
                <label class="transcript">"What you said (edit if needed)"
                    <textarea data-testid="transcript" rows="2" prop:value=move || state.transcript.get().unwrap_or_default()
                        on:input=move |ev| state.transcript.set(Some(event_target_value(&ev)))></textarea>
                </label>
                <button class="icon" aria-label="Remove the spoken question"
                    on:click=move |_| state.transcript.set(None)>"✕"</button>
            </Show>
            <div class="row">
                <textarea data-testid="question" rows="2" placeholder="Ask something… (Enter sends, Shift+Enter for a new line)"
                    aria-label="Your question" prop:value=move || state.draft.get()
                    on:input=move |ev| state.draft.set(event_target_value(&ev))
                    on:keydown=on_key on:paste=on_paste></textarea>
                <div class="tools">
                    <label class="button" title="Attach a picture" class:disabled=move || !state.can_see.get()>
                        "Picture"
                        <input type="file" accept="image/*" data-testid="image-input" class="sr-only"
                            on:change=move |ev| { if let Some(f) = first_file(&ev) { attach_picture(state, f) } }/>
                    </label>
                    <label class="button" title="Ask with an audio file" class:disabled=move || !state.can_hear.get()>
                        "Audio file"
                        <input type="file" accept="audio/*" data-testid="audio-input" class="sr-only"
                            on:change=move |ev| { if let Some(f) = first_file(&ev) { attach_audio_file(state, f) } }/>
                    </label>
                    <button data-testid="record" aria-pressed=move || recording.get().to_string()
                        disabled=move || !state.can_hear.get() on:click=toggle_recording
                        title=move || if recording.get() { "Stop recording" } else { "Record a question" }>
                        {move || if recording.get() { "Stop recording" } else { "Record" }}
                    </button>
                    <Show when=move || recording.get()>
                        <meter min="0" max="1" value=move || level.get() aria-label="Microphone level"></meter>
                    </Show>
                    <Show when=move || state.generating.get()
                        fallback=move || view! {
                            <button class="primary" data-testid="send" disabled=move || !ready() on:click=move |_| ask(state)>"Send"</button>
                        }>
                        <button data-testid="stop" on:click=move |_| send(ToWorker::Cancel, None, None)>"Stop"</button>
                    </Show>
                    <button data-testid="new-conversation" disabled=move || state.generating.get() on:click=move |_| {
                        state.messages.set(Vec::new());
                        send(ToWorker::NewConversation, None, None);
                    }>"New conversation"</button>
                </div>
            </div>
        </section>
    }
}

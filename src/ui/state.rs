//! The page's state, as signals, and how worker messages change it.

use crate::protocol::{Compute, FileInfo, FromWorker, Params, StorageInfo, StoredBundle, ToWorker};
use leptos::prelude::*;
use std::cell::RefCell;

thread_local! {
    static WORKER: RefCell<Option<crate::bridge::ModelWorker>> = const { RefCell::new(None) };
}

/// Sends a message to the model worker.
pub fn send(message: ToWorker, bytes: Option<Vec<u8>>, pcm: Option<Vec<f32>>) {
    WORKER.with(|w| {
        if let Some(w) = w.borrow().as_ref() {
            w.send(&message, bytes, pcm);
        }
    });
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Starting,
    NeedsDownload,
    Downloading,
    Paused,
    Loading,
    Ready,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FileRow {
    pub name: String,
    pub role: String,
    pub size: Option<u64>,
    pub done: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: usize,
    pub from_user: bool,
    pub text: String,
    pub image_url: Option<String>,
    pub heard: Option<String>,
    pub ids: Vec<u32>,
    pub stats: Option<String>,
    pub done: bool,
    pub failed: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Picture {
    pub bytes: Vec<u8>,
    pub url: Option<String>,
    pub name: String,
}

#[derive(Clone, Copy)]
pub struct AppState {
    pub manifest_url: RwSignal<String>,
    pub manifest_name: RwSignal<String>,
    pub stage: RwSignal<Stage>,
    pub files: RwSignal<Vec<FileRow>>,
    /// (bytes done, total, time of the first byte in ms, bytes then) for speed and ETA.
    pub progress: RwSignal<(u64, Option<u64>, f64, u64)>,
    pub notices: RwSignal<Vec<String>>,
    pub error: RwSignal<Option<String>>,
    pub storage: RwSignal<StorageInfo>,
    pub stored: RwSignal<Vec<StoredBundle>>,
    pub backend: RwSignal<Option<(String, String)>>,
    pub compute: RwSignal<Compute>,
    pub webgpu: RwSignal<Option<bool>>,
    pub load_step: RwSignal<Option<(usize, usize, String)>>,
    pub can_see: RwSignal<bool>,
    pub can_hear: RwSignal<bool>,
    pub messages: RwSignal<Vec<Message>>,
    pub generating: RwSignal<bool>,
    pub params: RwSignal<Params>,
    pub picture: RwSignal<Option<Picture>>,
    pub transcript: RwSignal<Option<String>>,
    pub transcribing: RwSignal<bool>,
    pub draft: RwSignal<String>,
}

pub fn now_ms() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map_or(0.0, |p| p.now())
}

impl AppState {
    pub fn new(manifest_url: String, compute: Compute) -> Self {
        Self {
            manifest_url: RwSignal::new(manifest_url),
            manifest_name: RwSignal::new(String::new()),
            stage: RwSignal::new(Stage::Starting),
            files: RwSignal::new(Vec::new()),
            progress: RwSignal::new((0, None, 0.0, 0)),
            notices: RwSignal::new(Vec::new()),
            error: RwSignal::new(None),
            storage: RwSignal::new(StorageInfo::default()),
            stored: RwSignal::new(Vec::new()),
            backend: RwSignal::new(None),
            compute: RwSignal::new(compute),
            webgpu: RwSignal::new(None),
            load_step: RwSignal::new(None),
            can_see: RwSignal::new(false),
            can_hear: RwSignal::new(false),
            messages: RwSignal::new(Vec::new()),
            generating: RwSignal::new(false),
            params: RwSignal::new(Params::default()),
            picture: RwSignal::new(None),
            transcript: RwSignal::new(None),
            transcribing: RwSignal::new(false),
            draft: RwSignal::new(String::new()),
        }
    }

    /// Starts the model worker; it reports what storage holds once it runs.
    pub fn start_worker(self) {
        match crate::bridge::ModelWorker::spawn(
            crate::bridge::worker_script(),
            move |m, _| self.on_message(m),
            move |e| self.error.set(Some(e)),
        ) {
            Ok(w) => WORKER.with(|slot| *slot.borrow_mut() = Some(w)),
            Err(e) => self.error.set(Some(e)),
        }
    }

    pub fn stored_complete(&self) -> bool {
        let url = self.manifest_url.get_untracked();
        self.stored
            .get_untracked()
            .iter()
            .any(|b| b.manifest_url == url && b.complete)
    }

    pub fn load(self) {
        self.stage.set(Stage::Loading);
        self.error.set(None);
        send(
            ToWorker::Load {
                manifest_url: self.manifest_url.get_untracked(),
                compute: self.compute.get_untracked(),
            },
            None,
            None,
        );
    }

    pub fn download(self) {
        self.stage.set(Stage::Downloading);
        self.error.set(None);
        self.notices.set(Vec::new());
        self.progress.set((0, None, 0.0, 0));
        send(
            ToWorker::Download {
                manifest_url: self.manifest_url.get_untracked(),
            },
            None,
            None,
        );
    }

    fn on_message(self, message: FromWorker) {
        match message {
            FromWorker::Ready {
                webgpu,
                stored,
                storage,
            } => {
                self.webgpu.set(Some(webgpu));
                self.stored.set(stored);
                self.storage.set(storage);
                if self.stage.get_untracked() == Stage::Starting {
                    if self.stored_complete() {
                        self.load();
                    } else {
                        self.stage.set(Stage::NeedsDownload);
                    }
                }
            }
            FromWorker::Manifest { name, files, .. } => {
                self.manifest_name.set(name);
                self.files.set(files.into_iter().map(row).collect());
            }
            FromWorker::DownloadProgress {
                file,
                file_done,
                done,
                total,
                ..
            } => {
                self.files.update(|rows| {
                    if let Some(r) = rows.iter_mut().find(|r| r.name == file) {
                        r.done = file_done;
                    }
                    // Files before this one are complete.
                    let position = rows.iter().position(|r| r.name == file).unwrap_or(0);
                    for r in rows.iter_mut().take(position) {
                        r.done = r.size.unwrap_or(r.done);
                    }
                });
                self.progress.update(|p| {
                    if p.2 == 0.0 {
                        *p = (done, total, now_ms(), done);
                    } else {
                        p.0 = done;
                        p.1 = total;
                    }
                });
            }
            FromWorker::DownloadNotice { message } => self.notices.update(|n| n.push(message)),
            FromWorker::Downloaded { .. } => {
                self.files.update(|rows| {
                    rows.iter_mut()
                        .for_each(|r| r.done = r.size.unwrap_or(r.done))
                });
                send(ToWorker::Hello, None, None);
                self.load();
            }
            FromWorker::Paused => {
                self.stage.set(Stage::Paused);
                // What is stored now (partial files included) shows in the panel.
                send(ToWorker::Hello, None, None);
            }
            FromWorker::LoadProgress { step, steps, what } => {
                self.load_step.set(Some((step, steps, what)))
            }
            FromWorker::Loaded {
                name,
                backend,
                note,
                vision,
                speech,
                ..
            } => {
                self.manifest_name.set(name);
                self.backend.set(Some((backend, note)));
                self.can_see.set(vision);
                self.can_hear.set(speech);
                self.load_step.set(None);
                self.stage.set(Stage::Ready);
            }
            FromWorker::Transcript { text, .. } => {
                self.transcribing.set(false);
                self.transcript.set(Some(text));
            }
            FromWorker::Token { id, text, .. } => self.messages.update(|m| {
                if let Some(last) = m.last_mut().filter(|l| !l.from_user) {
                    last.ids.extend(id);
                    if let Some(t) = text {
                        last.text.push_str(&t);
                    }
                }
            }),
            FromWorker::Done {
                tokens,
                finish,
                transcript,
                first_token_ms,
                tokens_per_second,
                dropped_turns,
                ..
            } => {
                self.generating.set(false);
                self.messages.update(|m| {
                    let n = m.len();
                    if n >= 2 {
                        if let Some(heard) = transcript.filter(|t| !t.is_empty()) {
                            m[n - 2].heard = Some(heard);
                        }
                    }
                    if let Some(last) = m.last_mut().filter(|l| !l.from_user) {
                        last.ids = tokens;
                        last.done = true;
                        if finish != "reply" {
                            let mut stats = format!(
                                "{} tokens · first after {:.0} ms · {:.1} tok/s",
                                last.ids.len(),
                                first_token_ms,
                                tokens_per_second
                            );
                            match finish.as_str() {
                                "cancelled" => stats.push_str(" · stopped"),
                                "max_tokens" => stats.push_str(" · token limit reached"),
                                "context_full" => stats.push_str(" · the conversation filled the context window: start a new one"),
                                _ => {}
                            }
                            if dropped_turns > 0 {
                                stats.push_str(&format!(" · {dropped_turns} oldest turn(s) dropped to fit"));
                            }
                            last.stats = Some(stats);
                        }
                    }
                });
            }
            FromWorker::Storage(info) => self.storage.set(info),
            FromWorker::Error { during, message } => {
                match during.as_str() {
                    "generate" => {
                        self.generating.set(false);
                        self.messages.update(|m| {
                            if let Some(last) = m.last_mut().filter(|l| !l.from_user) {
                                last.failed = true;
                                last.done = true;
                                last.text = message.clone();
                            }
                        });
                    }
                    "transcribe" => self.transcribing.set(false),
                    "download" => {
                        self.stage.set(Stage::NeedsDownload);
                        send(ToWorker::Hello, None, None);
                    }
                    "load" => self.stage.set(Stage::NeedsDownload),
                    _ => {}
                }
                self.error.set(Some(format!("{during}: {message}")));
            }
        }
    }
}

pub fn row(f: FileInfo) -> FileRow {
    FileRow {
        name: f.name,
        role: f.role,
        size: f.size,
        done: 0,
    }
}

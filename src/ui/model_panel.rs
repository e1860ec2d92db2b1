//! The model panel: which bundle, what it weighs, downloading it (progress, speed, ETA, pause,
//! resume), storage used, loading, deleting.

use super::state::{now_ms, AppState, Stage};
use crate::protocol::ToWorker;
use leptos::prelude::*;

use jnana::bundle::human_bytes as mb;

fn speed_and_eta(state: AppState) -> String {
    let (done, total, t0, done0) = state.progress.get();
    let seconds = (now_ms() - t0) / 1000.0;
    if t0 == 0.0 || seconds < 0.5 {
        return String::new();
    }
    let rate = (done - done0) as f64 / seconds;
    let mut s = format!("{:.1} MB/s", rate / 1e6);
    if let (Some(total), true) = (total, rate > 0.0) {
        let eta = (total.saturating_sub(done)) as f64 / rate;
        s.push_str(&format!(
            " · about {} left",
            if eta > 90.0 {
                format!("{:.0} min", eta / 60.0)
            } else {
                format!("{eta:.0} s")
            }
        ));
    }
    s
}

#[component]
fn StorageLine() -> impl IntoView {
    let state = expect_context::<AppState>();
    view! {
        <p class="storage" data-testid="storage">
            {move || {
                let s = state.storage.get();
                // The browser's usage figure lags behind writes; the bundles' own sizes do not.
                let models: u64 = state.stored.get().iter().map(|b| b.bytes).sum();
                let used = s.used.max(models);
                if s.quota == 0 { format!("Models stored: {}", mb(models)) } else {
                    format!("Storage: {} used of {} allowed", mb(used), mb(s.quota))
                }
            }}
        </p>
    }
}

#[component]
pub fn ModelPanel() -> impl IntoView {
    let state = expect_context::<AppState>();
    let url_input = RwSignal::new(state.manifest_url.get_untracked());
    let total = move || {
        state
            .files
            .get()
            .iter()
            .map(|f| f.size)
            .sum::<Option<u64>>()
    };
    let change_manifest = move |_| {
        let url = url_input.get_untracked().trim().to_string();
        if url.is_empty() {
            return;
        }
        super::remember_manifest(&url);
        state.manifest_url.set(url);
        state.files.set(Vec::new());
        state.stage.set(Stage::NeedsDownload);
        if state.stored_complete() {
            state.load();
        }
    };
    // Show what the bundle holds before downloading (the manifest only, never the weights).
    Effect::new(move |_| {
        let url = state.manifest_url.get();
        if state.stage.get_untracked() == Stage::Ready {
            return;
        }
        leptos::task::spawn_local(async move {
            if let Ok(m) = fetch_manifest(&url).await {
                if state.files.get_untracked().is_empty() {
                    state.manifest_name.set(m.0);
                    state.files.set(m.1);
                }
            }
        });
    });
    view! {
        <section class="panel" aria-label="Model" data-testid="model-panel">
            <h2>{move || {
                let n = state.manifest_name.get();
                if n.is_empty() { "Model".to_string() } else { n }
            }}</h2>
            <Show when=move || state.webgpu.get() == Some(false)>
                <p class="note">"This browser has no WebGPU: Jñāna will compute on the CPU (slower, but it works)."</p>
            </Show>
            <table class="files">
                <thead><tr><th>"File"</th><th>"Role"</th><th>"Size"</th><th>"Progress"</th></tr></thead>
                <tbody>
                    <For each=move || state.files.get() key=|f| (f.name.clone(), f.done) let:f>
                        <tr>
                            <td>{f.name.clone()}</td>
                            <td>{f.role.replace('_', " ")}</td>
                            <td>{f.size.map(mb).unwrap_or_else(|| "?".into())}</td>
                            <td><progress max=f.size.unwrap_or(1).max(1) as f64 value=f.done as f64
                                aria-label=format!("{} downloaded", f.name)></progress></td>
                        </tr>
                    </For>
                </tbody>
            </table>
            <p class="total">{move || match total() {
                Some(t) => format!("Total download: {}", mb(t)),
                None => "Total size: unknown until downloaded".into(),
            }}</p>
            <Show when=move || matches!(state.stage.get(), Stage::Downloading | Stage::Paused)>
                <div class="overall" data-testid="download-progress">
                    <progress max=move || state.progress.get().1.or_else(total).unwrap_or(1).max(1) as f64
                        value=move || state.progress.get().0 as f64 aria-label="Total downloaded"></progress>
                    <span>{move || {
                        let (done, of, ..) = state.progress.get();
                        let of = of.or_else(total).map(mb).unwrap_or_else(|| "?".into());
                        format!("{} of {of} {}", mb(done), speed_and_eta(state))
                    }}</span>
                </div>
            </Show>
            <div class="actions">
                {move || match state.stage.get() {
                    Stage::Starting => view! { <span>"Checking storage…"</span> }.into_any(),
                    Stage::NeedsDownload => view! {
                        <button class="primary" data-testid="download" on:click=move |_| state.download()>"Download"</button>
                    }.into_any(),
                    Stage::Downloading => view! {
                        <button data-testid="pause" on:click=move |_| crate::ui::state::send(ToWorker::Pause, None, None)>"Pause"</button>
                    }.into_any(),
                    Stage::Paused => view! {
                        <button class="primary" data-testid="resume" on:click=move |_| state.download()>"Resume"</button>
                    }.into_any(),
                    Stage::Loading => view! {
                        <span data-testid="loading">{move || match state.load_step.get() {
                            Some((step, steps, what)) => format!("Loading {what} ({step}/{steps})…"),
                            None => "Loading from storage…".into(),
                        }}</span>
                    }.into_any(),
                    Stage::Ready => view! { <span>"Ready"</span> }.into_any(),
                }}
                <Show when=move || {
                    let url = state.manifest_url.get();
                    state.stored.get().iter().any(|b| b.manifest_url == url)
                }>
                <button data-testid="delete" on:click=move |_| {
                    crate::ui::state::send(ToWorker::Delete { manifest_url: state.manifest_url.get_untracked() }, None, None);
                    state.files.update(|r| r.iter_mut().for_each(|f| f.done = 0));
                    state.stage.set(Stage::NeedsDownload);
                }>"Delete from this browser"</button>
                </Show>
            </div>
            <For each=move || state.notices.get() key=|n| n.clone() let:n>
                <p class="notice" role="status">{n}</p>
            </For>
            <StorageLine/>
            <details>
                <summary>"Use another model bundle"</summary>
                <label>"Manifest URL"
                    <input type="url" data-testid="manifest-url" prop:value=move || url_input.get()
                        on:input=move |ev| url_input.set(event_target_value(&ev))/>
                </label>
                <button on:click=change_manifest>"Use this bundle"</button>
            </details>
            <Show when=move || state.error.get().is_some()>
                <p class="error" role="alert" data-testid="error">{move || state.error.get().unwrap_or_default()}</p>
            </Show>
        </section>
    }
}

/// One line once the model is loaded.
#[component]
pub fn ModelSummary() -> impl IntoView {
    let state = expect_context::<AppState>();
    view! {
        <section class="summary" aria-label="Model">
            <span data-testid="ready">{move || format!("{} is ready", state.manifest_name.get())}</span>
            <span class="note">{move || state.backend.get().map(|b| b.1).unwrap_or_default()}</span>
            <StorageLine/>
            <Show when=move || state.error.get().is_some()>
                <p class="error" role="alert" data-testid="error">{move || state.error.get().unwrap_or_default()}</p>
            </Show>
        </section>
    }
}

async fn fetch_manifest(url: &str) -> Result<(String, Vec<super::state::FileRow>), String> {
    use wasm_bindgen::JsCast;
    let window = web_sys::window().ok_or("no window")?;
    let response: web_sys::Response =
        wasm_bindgen_futures::JsFuture::from(window.fetch_with_str(url))
            .await
            .map_err(|e| format!("{e:?}"))?
            .unchecked_into();
    let text = wasm_bindgen_futures::JsFuture::from(response.text().map_err(|e| format!("{e:?}"))?)
        .await
        .map_err(|e| format!("{e:?}"))?
        .as_string()
        .unwrap_or_default();
    let m = jnana::bundle::Manifest::from_json(&text).map_err(|e| e.to_string())?;
    Ok((
        m.name.clone(),
        crate::bridge::file_infos(&m)
            .into_iter()
            .map(super::state::row)
            .collect(),
    ))
}

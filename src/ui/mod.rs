//! The page (Leptos, client-side rendered). It never touches tensors: it shows state and sends
//! typed messages to the model worker.

mod chat;
mod composer;
mod media;
mod model_panel;
mod settings;
mod state;

use crate::protocol::Compute;
use leptos::prelude::*;
use state::{AppState, Stage};

pub const DEFAULT_MANIFEST: &str = "./default-manifest.json";

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

/// `?<param>=` of the page's address, else what was remembered under `jnana.<param>`.
fn chosen(param: &str) -> Option<String> {
    web_sys::window()
        .and_then(|w| w.location().search().ok())
        .and_then(|q| web_sys::UrlSearchParams::new_with_str(&q).ok())
        .and_then(|p| p.get(param))
        .or_else(|| storage()?.get_item(&format!("jnana.{param}")).ok()?)
}

/// The manifest to use: `?manifest=URL`, else the last one chosen, else the public default.
fn initial_manifest() -> String {
    chosen("manifest").unwrap_or_else(|| DEFAULT_MANIFEST.to_string())
}

/// Where to compute: `?compute=auto|webgpu|cpu`, else the last choice, else automatic.
fn initial_compute() -> Compute {
    chosen("compute")
        .and_then(|name| Compute::from_name(&name))
        .unwrap_or_default()
}

pub fn remember_compute(compute: Compute) {
    if let Some(s) = storage() {
        let _ = s.set_item("jnana.compute", compute.name());
    }
}

pub fn remember_manifest(url: &str) {
    if let Some(s) = storage() {
        let _ = s.set_item("jnana.manifest", url);
    }
}

fn set_theme(dark: bool) {
    if let Some(root) = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.document_element())
    {
        let _ = root.set_attribute("data-theme", if dark { "dark" } else { "light" });
    }
    if let Some(s) = storage() {
        let _ = s.set_item("jnana.theme", if dark { "dark" } else { "light" });
    }
}

fn prefers_dark() -> bool {
    storage()
        .and_then(|s| s.get_item("jnana.theme").ok().flatten())
        .map(|t| t == "dark")
        .or_else(|| {
            web_sys::window()?
                .match_media("(prefers-color-scheme: dark)")
                .ok()
                .flatten()
                .map(|m| m.matches())
        })
        .unwrap_or(false)
}

#[component]
pub fn App() -> impl IntoView {
    let state = AppState::new(initial_manifest(), initial_compute());
    provide_context(state);
    state.start_worker();
    let dark = RwSignal::new(prefers_dark());
    Effect::new(move |_| set_theme(dark.get()));
    let show_settings = RwSignal::new(false);

    view! {
        <header class="top">
            <h1>"Jñāna"</h1>
            <span class="tagline">"Private multimodal assistant — everything runs in this tab"</span>
            <span class="badge" data-testid="backend" title=move || state.backend.get().map(|b| b.1).unwrap_or_default()>
                {move || state.backend.get().map(|b| b.0).unwrap_or_else(|| "not loaded".into())}
            </span>
            <button class="icon" aria-label="Settings" aria-expanded=move || show_settings.get().to_string()
                on:click=move |_| show_settings.update(|s| *s = !*s)>"⚙"</button>
            <button class="icon" aria-label=move || if dark.get() { "Light mode" } else { "Dark mode" }
                on:click=move |_| dark.update(|d| *d = !*d)>{move || if dark.get() { "☀" } else { "☾" }}</button>
        </header>
        <Show when=move || show_settings.get()>
            <settings::Settings/>
        </Show>
        <main class="layout">
            <Show when=move || state.stage.get() != Stage::Ready
                fallback=|| view! { <model_panel::ModelSummary/> }>
                <model_panel::ModelPanel/>
            </Show>
            <chat::Chat/>
            <composer::Composer/>
        </main>
    }
}

//! Sampling settings.

use super::state::{AppState, Stage};
use crate::protocol::Compute;
use leptos::prelude::*;

fn number<T: std::str::FromStr>(ev: &leptos::ev::Event) -> Option<T> {
    event_target_value(ev).trim().parse().ok()
}

#[component]
pub fn Settings() -> impl IntoView {
    let state = expect_context::<AppState>();
    let p = state.params;
    view! {
        <section class="settings" aria-label="Settings">
            <label>"Max new tokens"
                <input type="number" min="1" max="2000" prop:value=move || p.get().max_new_tokens.to_string()
                    on:change=move |ev| { if let Some(v) = number::<usize>(&ev) { p.update(|p| p.max_new_tokens = v.clamp(1, 2000)) } }/>
            </label>
            <label>"Temperature (0 = greedy, as the seed)"
                <input type="number" min="0" max="2" step="0.1" prop:value=move || p.get().temperature.to_string()
                    on:change=move |ev| { if let Some(v) = number::<f64>(&ev) { p.update(|p| p.temperature = v.clamp(0.0, 2.0)) } }/>
            </label>
            <label>"Top-p (empty = off)"
                <input type="number" min="0" max="1" step="0.05" prop:value=move || p.get().top_p.map(|v| v.to_string()).unwrap_or_default()
                    on:change=move |ev| p.update(|p| p.top_p = number::<f64>(&ev).map(|v| v.clamp(0.0, 1.0)))/>
            </label>
            <label>"Seed"
                <input type="number" min="0" prop:value=move || p.get().seed.to_string()
                    on:change=move |ev| { if let Some(v) = number::<u64>(&ev) { p.update(|p| p.seed = v) } }/>
            </label>
            <label>"Compute on"
                <select data-testid="compute" on:change=move |ev| {
                    if let Some(c) = Compute::from_name(&event_target_value(&ev)) {
                        state.compute.set(c);
                        super::remember_compute(c);
                        // A loaded model moves to the chosen engine at once.
                        if state.stage.get_untracked() == Stage::Ready && !state.generating.get_untracked() {
                            state.load();
                        }
                    }
                }>
                    <option value="auto" selected=move || state.compute.get() == Compute::Auto>"Automatic (WebGPU when available)"</option>
                    <option value="webgpu" selected=move || state.compute.get() == Compute::Webgpu>"WebGPU"</option>
                    <option value="cpu" selected=move || state.compute.get() == Compute::Cpu>"CPU (WebAssembly)"</option>
                </select>
            </label>
            <p class="hint">"The speech model is the one the model bundle names; choose another bundle (below) for another Whisper size."</p>
        </section>
    }
}

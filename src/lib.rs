//! Jñāna's browser app: the UI (Leptos, CSR) and the Web Worker that owns the models. The UI
//! never touches tensors; the two talk through [`protocol`].

pub mod protocol;

#[cfg(target_arch = "wasm32")]
pub mod bridge;
#[cfg(target_arch = "wasm32")]
pub mod ui;
#[cfg(target_arch = "wasm32")]
pub mod worker;

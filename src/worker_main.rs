//! The Web Worker: downloads, stores and runs the models.

#[cfg(target_arch = "wasm32")]
fn main() {
    jnana_app::worker::main();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("jnana-worker runs in the browser, inside the app");
}

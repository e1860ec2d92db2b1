//! The Web Worker: downloads, stores and runs the models.

#[cfg(target_arch = "wasm32")]
fn main() {
    console_error_panic_hook::set_once();
    jnana_app::worker::start();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("jnana-worker runs in the browser, inside the app");
}

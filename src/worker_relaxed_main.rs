//! The Web Worker built with relaxed SIMD (`--features relaxed-simd`): the page starts it where
//! the browser has relaxed SIMD, and `jnana-worker` elsewhere.

#[cfg(target_arch = "wasm32")]
fn main() {
    jnana_app::worker::main();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("jnana-worker-relaxed runs in the browser, inside the app");
}

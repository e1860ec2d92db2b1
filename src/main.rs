//! The page: mounts the Leptos UI.

#[cfg(target_arch = "wasm32")]
fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(jnana_app::ui::App);
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("jnana-app runs in the browser: build it with `trunk build --release`");
}

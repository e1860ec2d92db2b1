//! The conversation: the user's turns (with their picture and what was heard) and the streamed
//! answers, rendered as text (never as HTML).

use super::state::{AppState, Message};
use leptos::prelude::*;

#[component]
fn Bubble(m: Message) -> impl IntoView {
    let state = expect_context::<AppState>();
    let id = m.id;
    let current = move || {
        state
            .messages
            .with(|all| all.iter().find(|x| x.id == id).cloned())
    };
    let class = if m.from_user {
        "bubble user"
    } else {
        "bubble assistant"
    };
    view! {
        <article class=class data-testid=if m.from_user { "user-message" } else { "answer" }
            data-ids=move || current().map(|c| c.ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")).unwrap_or_default()
            data-done=move || current().map(|c| c.done.to_string()).unwrap_or_default()
            aria-busy=move || current().map(|c| (!c.done).to_string()).unwrap_or_default()>
            {m.image_url.clone().map(|url| view! { <img class="thumb" src=url alt="Your picture"/> })}
            <Show when=move || current().and_then(|c| c.heard).is_some()>
                <p class="heard">"Heard: " {move || current().and_then(|c| c.heard).unwrap_or_default()}</p>
            </Show>
            <p class="text" class:failed=move || current().map(|c| c.failed).unwrap_or(false)>
                {move || current().map(|c| c.text).unwrap_or_default()}
            </p>
            <Show when=move || current().and_then(|c| c.stats).is_some()>
                <p class="stats" data-testid="stats">{move || current().and_then(|c| c.stats).unwrap_or_default()}</p>
            </Show>
        </article>
    }
}

#[component]
pub fn Chat() -> impl IntoView {
    let state = expect_context::<AppState>();
    view! {
        <section class="chat" aria-label="Conversation" aria-live="polite" data-testid="chat">
            <Show when=move || state.messages.with(Vec::is_empty)>
                <p class="empty">"Ask about a picture, speak a question, or type one. Nothing leaves this browser."</p>
            </Show>
            <For each=move || state.messages.get() key=|m| m.id let:m>
                <Bubble m=m/>
            </For>
        </section>
    }
}

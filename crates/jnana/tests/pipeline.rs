//! The seed's pipeline on a tiny random bundle: prompt layout, multi-turn continuation, the
//! context window, cancellation, sampling and streaming.

#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::*;
use jnana::generation::{Generation, GenerationParams};
use jnana::pipeline::{PromptPart, NO_INPUT_REPLY};
use jnana::{CancelFlag, Error, FinishReason, Request};
use std::ops::ControlFlow;

fn greedy(max: usize) -> GenerationParams {
    GenerationParams {
        max_new_tokens: max,
        ..GenerationParams::default()
    }
}

fn text(t: &str) -> Request {
    Request {
        text: Some(t.into()),
        ..Request::default()
    }
}

#[test]
fn empty_request_gets_the_seed_reply() {
    let model = tiny_model();
    let mut conv = model.new_conversation();
    for request in [
        Request::default(),
        text("   \n"),
        Request {
            transcript: Some(String::new()),
            ..Request::default()
        },
    ] {
        let answer = conv
            .ask(&model, &request, &greedy(5), |_| ControlFlow::Continue(()))
            .unwrap();
        assert_eq!(answer.text, NO_INPUT_REPLY);
        assert!(answer.tokens.is_empty() && answer.finish.is_none());
    }
    assert_eq!(conv.positions(), 0, "nothing is fed for an empty request");
}

#[test]
fn markers_tokenize_as_the_seed_relies_on() {
    let model = tiny_model();
    assert_eq!(
        model.tokenizer.encode("caption image:").unwrap(),
        [6888, 1159, 2939, 25]
    );
    assert_eq!(
        model.tokenizer.encode("end of question:").unwrap(),
        [437, 286, 1808, 25]
    );
    // Phi-2's added whitespace tokens are matched before BPE.
    assert_eq!(model.tokenizer.vocab_size(), 50295);
    assert_eq!(model.tokenizer.encode("a    b").unwrap(), [64, 50284, 65]);
}

#[test]
fn prompt_is_built_exactly_as_the_seed_builds_it() {
    let model = tiny_model();
    let picture = png(320, 200);
    let request = Request {
        image: Some(picture.clone()),
        transcript: Some("What colour is it?".into()),
        text: Some("Answer briefly.".into()),
        ..Request::default()
    };
    let mut conv = model.new_conversation();
    let answer = conv
        .ask(&model, &request, &greedy(12), |_| ControlFlow::Continue(()))
        .unwrap();

    // The seed: [image rows, caption image:] + transcript + text + end of question:
    let tok = |s: &str| PromptPart::Tokens(model.tokenizer.encode(s).unwrap());
    let parts = [
        PromptPart::Image(model.encode_image(&picture).unwrap()),
        tok("caption image:"),
        tok("What colour is it?"),
        tok("Answer briefly."),
        tok("end of question:"),
    ];
    let embeds = model.embed_prompt(&parts).unwrap();
    assert_eq!(embeds.dim(1).unwrap(), answer.prompt_positions);
    assert_eq!(answer.prompt_positions, 49 + 4 + 5 + 3 + 4);
    let mut cache = model.phi.new_cache();
    let generation = Generation::start(
        &model.phi,
        &mut cache,
        &embeds,
        &greedy(12),
        model.eos_token_id,
        model.vocab_limit(),
    )
    .unwrap();
    let (manual, _) = generation.run_to_end(&model.phi, &mut cache).unwrap();
    assert_eq!(answer.tokens, manual);
}

#[test]
fn follow_up_continues_the_cache_as_one_long_prompt() {
    let model = tiny_model();
    let mut conv = model.new_conversation();
    let first = conv
        .ask(&model, &text("Hello there"), &greedy(6), |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
    let second = conv
        .ask(&model, &text("And then?"), &greedy(6), |_| {
            ControlFlow::Continue(())
        })
        .unwrap();

    // Turn format: prompt1 answer1 <|endoftext|> prompt2, fed fresh, must give the same answer.
    let eos = model.eos_token_id.unwrap();
    let tok = |s: &str| model.tokenizer.encode(s).unwrap();
    let mut ids = tok("Hello there");
    ids.extend(tok("end of question:"));
    ids.extend(&first.tokens);
    ids.push(eos);
    ids.extend(tok("And then?"));
    ids.extend(tok("end of question:"));
    let embeds = model.phi.embed(&ids).unwrap().unsqueeze(0).unwrap();
    let mut cache = model.phi.new_cache();
    let (fresh, _) = Generation::start(
        &model.phi,
        &mut cache,
        &embeds,
        &greedy(6),
        Some(eos),
        model.vocab_limit(),
    )
    .unwrap()
    .run_to_end(&model.phi, &mut cache)
    .unwrap();
    assert_eq!(second.tokens, fresh);
    assert_eq!(second.prompt_positions, ids.len());
    assert_eq!(conv.turns(), 2);
}

#[test]
fn a_picture_is_encoded_once_per_conversation() {
    let model = tiny_model();
    let picture = png(64, 64);
    let mut conv = model.new_conversation();
    let ask = |conv: &mut jnana::Conversation, t: &str| {
        let r = Request {
            image: Some(picture.clone()),
            text: Some(t.into()),
            ..Request::default()
        };
        conv.ask(&model, &r, &greedy(3), |_| ControlFlow::Continue(()))
            .unwrap()
    };
    ask(&mut conv, "first");
    let before = conv.positions();
    let second = ask(&mut conv, "second");
    // The second turn carries no new image rows: only the closing token(s) and the text.
    let grew = second.prompt_positions - before;
    assert!(grew < 49, "picture was fed again ({grew} new positions)");
    assert_eq!(conv.encoded_images(), 1);
}

#[test]
fn a_prompt_longer_than_the_context_is_refused_and_the_chat_goes_on() {
    let (m, f) = tiny_bundle(|s| s.text.max_position_embeddings = 96);
    let model = load(&m, &f);
    let mut conv = model.new_conversation();
    let long = "word ".repeat(200);
    let err = conv
        .ask(&model, &text(&long), &greedy(4), |_| {
            ControlFlow::Continue(())
        })
        .unwrap_err();
    assert!(
        matches!(err, Error::ContextOverflow { limit: 96, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("context holds 96"), "{err}");
    let ok = conv
        .ask(&model, &text("short"), &greedy(4), |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(ok.finish, Some(FinishReason::MaxTokens));
}

#[test]
fn long_conversations_drop_their_oldest_turns() {
    let (m, f) = tiny_bundle(|s| s.text.max_position_embeddings = 120);
    let model = load(&m, &f);
    let mut conv = model.new_conversation();
    let picture = png(48, 48);
    let first = Request {
        image: Some(picture),
        text: Some("look".into()),
        ..Request::default()
    };
    conv.ask(&model, &first, &greedy(8), |_| ControlFlow::Continue(()))
        .unwrap();
    let mut dropped = 0;
    for i in 0..12 {
        let a = conv
            .ask(
                &model,
                &text(&format!("question number {i}")),
                &greedy(8),
                |_| ControlFlow::Continue(()),
            )
            .unwrap();
        assert!(conv.positions() <= 120);
        dropped += a.dropped_turns;
    }
    assert!(dropped > 0, "the context never filled");
    // The picture stays in view after its turn was dropped.
    assert!(conv.positions() >= 49);
}

#[test]
fn generation_stops_when_the_context_is_full() {
    let (m, f) = tiny_bundle(|s| s.text.max_position_embeddings = 40);
    let model = load(&m, &f);
    let mut conv = model.new_conversation();
    let a = conv
        .ask(&model, &text("fill it up"), &greedy(1000), |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
    assert!(matches!(
        a.finish,
        Some(FinishReason::ContextFull) | Some(FinishReason::EndOfText)
    ));
    assert!(conv.positions() <= 40);
    // And the conversation recovers by dropping the full turn.
    let b = conv
        .ask(&model, &text("again"), &greedy(3), |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
    assert!(b.finish.is_some());
}

#[test]
fn stop_cancels_mid_answer_and_a_follow_up_still_works() {
    let model = tiny_model();
    let mut conv = model.new_conversation();
    let mut seen = 0;
    let a = conv
        .ask(&model, &text("Tell me a story"), &greedy(50), |_| {
            seen += 1;
            if seen == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(a.finish, Some(FinishReason::Cancelled));
    assert_eq!(a.tokens.len(), 3);
    let b = conv
        .ask(&model, &text("Go on"), &greedy(4), |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(b.tokens.len(), 4);

    // The flag works from another thread too.
    let flag: CancelFlag = conv.cancel_flag();
    let mut n = 0;
    let c = conv
        .ask(&model, &text("More"), &greedy(50), |_| {
            n += 1;
            if n == 2 {
                let f = flag.clone();
                std::thread::spawn(move || f.cancel()).join().unwrap();
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(c.finish, Some(FinishReason::Cancelled));
    assert_eq!(c.tokens.len(), 2);
}

#[test]
fn sampling_is_seeded_and_stays_in_the_tokenizer_vocabulary() {
    let model = tiny_model();
    let run = |params: &GenerationParams| {
        let mut conv = model.new_conversation();
        conv.ask(&model, &text("Pick some words"), params, |_| {
            ControlFlow::Continue(())
        })
        .unwrap()
        .tokens
    };
    let sampled = |seed| GenerationParams {
        temperature: 1.0,
        top_p: Some(0.95),
        top_k: Some(50),
        seed,
        ..greedy(24)
    };
    assert_eq!(run(&sampled(7)), run(&sampled(7)));
    assert_ne!(run(&sampled(7)), run(&sampled(8)));
    let top1 = GenerationParams {
        temperature: 0.7,
        top_k: Some(1),
        ..greedy(24)
    };
    assert_eq!(run(&top1), run(&greedy(24)));
    for t in run(&GenerationParams {
        temperature: 2.0,
        ..greedy(64)
    }) {
        assert!(
            (t as usize) < model.tokenizer.vocab_size(),
            "token {t} beyond the tokenizer"
        );
    }
    let penalized = run(&GenerationParams {
        repeat_penalty: 1.5,
        ..greedy(24)
    });
    assert_eq!(penalized.len(), 24);
}

#[test]
fn streamed_pieces_are_whole_characters_and_add_up_to_the_answer() {
    let model = tiny_model();
    let mut conv = model.new_conversation();
    let mut pieces = String::new();
    let mut events = 0;
    let a = conv
        .ask(&model, &text("Say something"), &greedy(40), |e| {
            events += 1;
            pieces.push_str(e.text.as_deref().unwrap_or(""));
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(pieces, a.text);
    assert!(events >= a.tokens.len());
    assert_eq!(model.tokenizer.decode(&a.tokens).unwrap(), a.text);

    // Byte-level tokens split multi-byte characters; the stream must hold them back.
    let sample = "naïve café 🦀 世界 ok";
    let ids = model.tokenizer.encode(sample).unwrap();
    assert!(ids.len() > sample.chars().count() / 2);
    let mut stream = jnana::tokenizer::TokenStream::new();
    let mut out = String::new();
    for id in ids {
        if let Some(piece) = stream.push(&model.tokenizer, id).unwrap() {
            assert!(!piece.contains('\u{FFFD}'), "half a character in {piece:?}");
            out.push_str(&piece);
        }
    }
    if let Some(rest) = stream.finish(&model.tokenizer).unwrap() {
        out.push_str(&rest);
    }
    assert_eq!(out, sample);
}

#[test]
fn answers_can_be_driven_one_token_at_a_time() {
    let model = tiny_model();
    let mut stepped = model.new_conversation();
    let mut answering = stepped
        .begin(&model, &text("Step by step"), &greedy(6))
        .unwrap();
    let mut ids = Vec::new();
    while let Some(event) = answering.next(&model, &mut stepped).unwrap() {
        ids.extend(event.id);
    }
    let answer = answering.finish(&mut stepped);
    assert_eq!(answer.tokens, ids);
    let mut whole = model.new_conversation();
    let same = whole
        .ask(&model, &text("Step by step"), &greedy(6), |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(answer.tokens, same.tokens);
    // Both conversations continue identically.
    let next = |c: &mut jnana::Conversation| {
        c.ask(&model, &text("more"), &greedy(4), |_| {
            ControlFlow::Continue(())
        })
        .unwrap()
        .tokens
    };
    assert_eq!(next(&mut stepped), next(&mut whole));
}

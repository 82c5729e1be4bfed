//! Prompt extension: short prompts become the dense captions the model was trained on.
//!
//! The built-in expander parses the prompt with the world's caption grammar, fills every
//! attribute the prompt leaves open (size, region, speed, background, ...) from the seed, and
//! writes the result with [`dense_caption`], so the model sees its training distribution. Words
//! the grammar does not know are kept in the report (and logged), never silently dropped from
//! view. An OpenAI-compatible chat endpoint can do the rewriting instead; when it fails the
//! rule-based expander is used with a warning.

use std::time::Duration;

use rand::seq::IndexedRandom;
use rand::Rng;
use serde::Serialize;
use tessera_world::caption::Motion;
use tessera_world::caption::{
    Background, BackgroundKind, BgColour, Camera, Colour, Direction, Event, EventKind, MotionKind,
    ObjectSpec, ParsedEvent, ParsedPrompt, Region, Shape, Size, Speed, Turn,
};
use tessera_world::{
    dense_caption, parse_prompt, scene_caption_without_background, SceneDescription,
};

use crate::noise;

/// Noise stream of the prompt filler (see [`noise::rng`]).
const PROMPT_STREAM: u64 = 0x70;

/// How long the chat endpoint may take before the rule-based expander takes over.
const ENDPOINT_TIMEOUT: Duration = Duration::from_secs(30);

/// Who wrote the prompt the model saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptSource {
    /// Used as given (`--no-extend`, or nothing the grammar could expand).
    Original,
    /// The built-in grammar-based expander.
    Rules,
    /// The chat endpoint.
    Endpoint,
}

/// The prompt after extension, with what was not understood.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExtendedPrompt {
    pub text: String,
    pub source: PromptSource,
    /// Words of the original prompt the caption grammar does not know, lower-cased, in order.
    pub unknown_words: Vec<String>,
    /// Why an endpoint was not used, when one was asked for and failed.
    pub fallback_reason: Option<String>,
}

/// Rule-based extension: deterministic in `(prompt, seed)`. A prompt naming no object the
/// grammar knows is returned unchanged (inventing objects would ignore the user). With
/// `frames_given` (image→video, extend, connect, edit) a background the prompt does not name is
/// left out, not invented: the given frames show it, and an invented one made the model repaint
/// them (an image's beige sky turned slate from the second latent frame on).
pub fn extend_prompt(prompt: &str, seed: u64, frames_given: bool) -> ExtendedPrompt {
    let parsed = parse_prompt(prompt);
    report_unknown(&parsed.unknown_words);
    let (text, source) = if parsed.objects.is_empty() {
        (prompt.to_string(), PromptSource::Original)
    } else {
        let mut rng = noise::rng(seed, PROMPT_STREAM);
        let scene = fill(&parsed, &mut rng);
        let text = if frames_given && parsed.background.is_none() {
            scene_caption_without_background(&scene)
        } else {
            dense_caption(&scene)
        };
        (text, PromptSource::Rules)
    };
    ExtendedPrompt {
        text,
        source,
        unknown_words: parsed.unknown_words,
        fallback_reason: None,
    }
}

/// The prompt unchanged (for `--no-extend`), still reporting unknown words.
pub fn keep_prompt(prompt: &str) -> ExtendedPrompt {
    let parsed = parse_prompt(prompt);
    report_unknown(&parsed.unknown_words);
    ExtendedPrompt {
        text: prompt.to_string(),
        source: PromptSource::Original,
        unknown_words: parsed.unknown_words,
        fallback_reason: None,
    }
}

/// Extension by an OpenAI-compatible chat endpoint (`URL` is the full `.../chat/completions`
/// address or its API base, e.g. `http://127.0.0.1:8080/v1`). Any failure (unreachable, HTTP
/// error, malformed reply) logs a warning and falls back to [`extend_prompt`]. With
/// `frames_given` the endpoint is told so, and a background sentence it adds anyway is dropped
/// unless the prompt names one, as [`extend_prompt`] does.
pub fn extend_prompt_via(prompt: &str, seed: u64, url: &str, frames_given: bool) -> ExtendedPrompt {
    match ask_endpoint(prompt, seed, url, frames_given) {
        Ok(text) => {
            let mut out = keep_prompt(prompt);
            out.text = if frames_given && parse_prompt(prompt).background.is_none() {
                without_background_sentence(&text)
            } else {
                text
            };
            out.source = PromptSource::Endpoint;
            out
        }
        Err(reason) => {
            tracing::warn!(%url, %reason, "prompt endpoint failed; using the built-in expander");
            let mut out = extend_prompt(prompt, seed, frames_given);
            out.fallback_reason = Some(reason);
            out
        }
    }
}

fn report_unknown(words: &[String]) {
    if !words.is_empty() {
        tracing::warn!(
            words = ?words,
            "prompt words the caption grammar does not know; the model may ignore them"
        );
    }
}

/// What the chat model is told: the target style, by example.
const SYSTEM_PROMPT: &str = "Rewrite the user's video prompt as one dense caption in exactly \
this style, saying nothing else: 'The background is plain sky. A large red circle in the top \
left bounces around quickly, heading down and to the right. Two small blue squares move slowly \
to the left.' Use only the shapes circle, square, triangle, star, ring, diamond, cross; the \
colours red, orange, yellow, green, cyan, blue, purple, pink, white, black; the sizes small, \
medium, large; motions move, bounce, fall, orbit, spin, stay still. Keep every object, colour \
and motion the user asked for.";

/// Added to [`SYSTEM_PROMPT`] when the video continues given frames.
const FRAMES_GIVEN_NOTE: &str = " The video starts from frames the user gives, which show the \
background: leave the background sentence out unless the user names a background.";

/// `text` without its sentences that start "The background is".
fn without_background_sentence(text: &str) -> String {
    text.split_inclusive('.')
        .filter(|s| !s.trim_start().starts_with("The background is"))
        .collect::<String>()
        .trim()
        .to_string()
}

fn chat_url(url: &str) -> String {
    let base = url.trim_end_matches('/');
    if base.ends_with("/chat/completions") {
        base.to_string()
    } else {
        format!("{base}/chat/completions")
    }
}

fn ask_endpoint(prompt: &str, seed: u64, url: &str, frames_given: bool) -> Result<String, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(ENDPOINT_TIMEOUT))
        .build()
        .into();
    let system = if frames_given {
        format!("{SYSTEM_PROMPT}{FRAMES_GIVEN_NOTE}")
    } else {
        SYSTEM_PROMPT.to_string()
    };
    let body = serde_json::json!({
        "model": "default",
        "temperature": 0,
        "seed": seed,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": prompt},
        ],
    });
    let mut resp = agent
        .post(&chat_url(url))
        .send_json(&body)
        .map_err(|e| format!("request failed: {e}"))?;
    let reply: serde_json::Value = resp
        .body_mut()
        .read_json()
        .map_err(|e| format!("reply is not JSON: {e}"))?;
    let text = reply
        .pointer("/choices/0/message/content")
        .and_then(|c| c.as_str())
        .map(str::trim)
        .unwrap_or_default();
    if text.is_empty() {
        return Err("reply has no choices[0].message.content".into());
    }
    Ok(text.to_string())
}

// ───────────────────────────── filling a parsed prompt ─────────────────────────────

fn pick<T: Copy>(rng: &mut impl Rng, all: &[T]) -> T {
    // The vocabularies are never empty.
    *all.choose(rng).unwrap_or(&all[0])
}

/// Motions drawn when the prompt names none: everything but standing still.
const MOVING: &[MotionKind] = &[
    MotionKind::Linear,
    MotionKind::Bounce,
    MotionKind::Fall,
    MotionKind::Orbit,
    MotionKind::Spin,
];

/// A full scene from what the prompt says, the rest drawn from `rng`.
fn fill(parsed: &ParsedPrompt, rng: &mut impl Rng) -> SceneDescription {
    let mut objects = Vec::with_capacity(parsed.objects.len());
    for p in &parsed.objects {
        let count = p.count.unwrap_or(2).clamp(1, 4);
        let shape = p.shape.unwrap_or_else(|| pick(rng, Shape::ALL));
        let round = matches!(shape, Shape::Circle | Shape::Ring);
        let kind = p.motion.unwrap_or_else(|| loop {
            // Circles and rings look the same at every angle: a drawn spin would be invisible.
            let k = pick(rng, MOVING);
            if !(round && k == MotionKind::Spin) {
                break k;
            }
        });
        let speed = p.speed.unwrap_or_else(|| pick(rng, Speed::ALL));
        let direction = p.direction.unwrap_or_else(|| {
            let along = p.axis.map_or(Direction::ALL, |a| a.directions());
            pick(rng, along)
        });
        let turn = p.turn.unwrap_or_else(|| pick(rng, Turn::ALL));
        let motion = match kind {
            MotionKind::Still => Motion::Still,
            MotionKind::Linear => Motion::Linear { direction, speed },
            MotionKind::Bounce => Motion::Bounce { direction, speed },
            MotionKind::Fall => Motion::Fall,
            MotionKind::Orbit => Motion::Orbit { turn, speed },
            MotionKind::Spin => Motion::Spin { turn, speed },
        };
        objects.push(ObjectSpec {
            count,
            colour: p.colour.unwrap_or_else(|| pick(rng, Colour::ALL)),
            shape,
            size: p.size.unwrap_or_else(|| pick(rng, Size::ALL)),
            motion,
            region: (count == 1).then(|| p.region.unwrap_or_else(|| pick(rng, Region::ALL))),
        });
    }
    let pb = parsed.background.clone().unwrap_or_default();
    let kind = pb.kind.unwrap_or_else(|| pick(rng, BackgroundKind::ALL));
    // A floor named on its own ("a blue floor") is the bottom colour; the top differs from it.
    let floor = pb.floor.filter(|_| kind == BackgroundKind::Floor);
    let other_than = |rng: &mut _, not: Option<BgColour>| loop {
        let c = pick(rng, BgColour::ALL);
        if Some(c) != not {
            break c;
        }
    };
    let top = match pb.colours.first() {
        Some(c) => *c,
        None => other_than(rng, floor),
    };
    let bottom = match (kind, floor, pb.colours.get(1)) {
        (BackgroundKind::Solid, _, _) => top,
        (_, Some(f), _) => f,
        (_, None, Some(c)) => *c,
        _ => other_than(rng, Some(top)),
    };
    // Flat index of each group's first member (events name objects, not groups).
    let firsts: Vec<usize> = objects
        .iter()
        .scan(0usize, |acc, o| {
            let first = *acc;
            *acc += o.count as usize;
            Some(first)
        })
        .collect();
    let flat = |g: usize| firsts.get(g).copied();
    let mut events: Vec<Event> = parsed
        .events
        .iter()
        .filter_map(|e| {
            let (object, kind) = match *e {
                ParsedEvent::Wall { object, wall } => (object, EventKind::Wall { wall }),
                ParsedEvent::Collides { object, other } => (
                    object,
                    EventKind::Collides {
                        other: flat(other?)?,
                    },
                ),
                ParsedEvent::PassesBehind { object, other } => (
                    object,
                    EventKind::PassesBehind {
                        other: flat(other?)?,
                    },
                ),
                ParsedEvent::Reappears { object } => (object, EventKind::Reappears { other: 0 }),
            };
            Some(Event {
                frame: 0,
                time: 0.0,
                object: flat(object)?,
                kind,
            })
        })
        .collect();
    events.sort_by_key(|e| e.object);
    SceneDescription {
        objects,
        background: Background { kind, top, bottom },
        camera: parsed.camera.unwrap_or(Camera::Still),
        events,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[test]
    fn short_prompt_expands_keeping_what_it_says() {
        let e = extend_prompt("a crimson ball drops", 3, false);
        assert_eq!(e.source, PromptSource::Rules);
        assert!(e.text.contains("red circle"), "{}", e.text);
        assert!(e.text.contains("falls"), "{}", e.text);
        assert!(e.text.starts_with("The background") || e.text.starts_with("A plain"));
        // Everything the expansion says parses back to the same objects.
        let back = parse_prompt(&e.text);
        assert!(back.unknown_words.is_empty(), "{:?}", back.unknown_words);
        assert_eq!(back.objects.len(), 1);
        assert_eq!(back.objects[0].colour, Some(Colour::Red));
    }

    #[test]
    fn a_floor_named_by_an_object_colour_is_the_backdrop() {
        // README's first prompt: "blue" names the floor, not the ball.
        let e = extend_prompt("a red ball bounces across a blue floor", 0, false);
        let scene = parse_prompt(&e.text);
        let bg = scene.background.expect("background parsed back");
        assert_eq!(bg.kind, Some(BackgroundKind::Floor));
        assert_eq!(bg.colours.get(1), Some(&BgColour::Sky), "{}", e.text);
        assert_eq!(scene.objects.len(), 1);
        assert_eq!(
            scene.objects[0].colour,
            Some(tessera_world::caption::Colour::Red)
        );
        // "Across" draws a sideways heading, never up or down.
        for seed in 0..16 {
            let e = extend_prompt("a red ball bounces across a blue floor", seed, false);
            let d = parse_prompt(&e.text).objects[0].direction;
            assert!(
                matches!(d, Some(Direction::Left | Direction::Right)),
                "{}",
                e.text
            );
        }
        // After a subject, a bare floor is still an event.
        let e = parse_prompt("a red ball hits the floor");
        assert!(e.background.is_none());
        assert_eq!(e.events.len(), 1);
    }

    #[test]
    fn given_frames_keep_their_background_unless_the_prompt_names_one() {
        let bare = extend_prompt("a crimson ball drops", 3, true);
        assert_eq!(bare.source, PromptSource::Rules);
        let full = extend_prompt("a crimson ball drops", 3, false);
        // The same scene, minus the invented first sentence.
        assert!(
            full.text.ends_with(&bare.text),
            "{} / {}",
            full.text,
            bare.text
        );
        assert!(bare.text.starts_with("A ") && bare.text.contains("red circle"));
        assert!(
            parse_prompt(&bare.text).background.is_none(),
            "{}",
            bare.text
        );
        let named = extend_prompt("a red ball drops on a plain slate background", 3, true);
        let bg = parse_prompt(&named.text)
            .background
            .expect("background kept");
        assert_eq!(bg.colours.first(), Some(&BgColour::Slate), "{}", named.text);
    }

    #[test]
    fn extension_is_deterministic_in_the_seed() {
        let p = "two blue squares";
        assert_eq!(extend_prompt(p, 1, false), extend_prompt(p, 1, false));
        let texts: std::collections::HashSet<String> =
            (0..8).map(|s| extend_prompt(p, s, false).text).collect();
        assert!(texts.len() > 1, "the seed should fill open attributes");
        for t in &texts {
            assert!(t.contains("Two") && t.contains("blue squares"), "{t}");
        }
    }

    #[test]
    fn unknown_words_are_kept_and_reported() {
        let e = extend_prompt("a red circle next to a zebra", 0, false);
        assert!(e.unknown_words.contains(&"zebra".to_string()), "{e:?}");
        let none = extend_prompt("hello world", 0, false);
        assert_eq!(none.source, PromptSource::Original);
        assert_eq!(none.text, "hello world");
        assert!(keep_prompt("a zebra")
            .unknown_words
            .contains(&"zebra".to_string()));
    }

    /// A one-shot HTTP server on 127.0.0.1 answering with `reply`; returns its base URL and
    /// the request it received.
    fn fake_server(reply: &'static str) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read headers, then the body by Content-Length.
            loop {
                let n = s.read(&mut chunk).unwrap();
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            let l = l.to_ascii_lowercase();
                            l.strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len || n == 0 {
                        break;
                    }
                }
            }
            let body = reply;
            write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                body.len(),
                body
            )
            .unwrap();
            String::from_utf8_lossy(&buf).to_string()
        });
        (url, handle)
    }

    #[test]
    fn endpoint_reply_is_used() {
        let (url, server) = fake_server(
            r#"{"choices":[{"message":{"role":"assistant","content":" The background is plain sky. A large green star spins clockwise quickly in place. "}}]}"#,
        );
        let e = extend_prompt_via("a green star spins", 0, &url, false);
        let request = server.join().unwrap();
        assert!(
            request.starts_with("POST /v1/chat/completions"),
            "{request}"
        );
        assert!(request.contains("a green star spins"));
        assert_eq!(e.source, PromptSource::Endpoint);
        assert_eq!(
            e.text,
            "The background is plain sky. A large green star spins clockwise quickly in place."
        );
    }

    /// With frames given, the endpoint is told so and a background it invents is dropped; one
    /// the prompt names is kept.
    #[test]
    fn endpoint_leaves_the_background_to_given_frames() {
        const REPLY: &str = r#"{"choices":[{"message":{"content":"A large green star spins quickly in place. The background is plain slate."}}]}"#;
        let (url, server) = fake_server(REPLY);
        let e = extend_prompt_via("a green star spins", 0, &url, true);
        let request = server.join().unwrap();
        assert!(
            request.contains("leave the background sentence out"),
            "{request}"
        );
        assert_eq!(e.text, "A large green star spins quickly in place.");
        let (url, server) = fake_server(REPLY);
        let e = extend_prompt_via("a green star spins on a slate background", 0, &url, true);
        server.join().unwrap();
        assert!(
            e.text.ends_with("The background is plain slate."),
            "{}",
            e.text
        );
        let (url, server) = fake_server(REPLY);
        let e = extend_prompt_via("a green star spins", 0, &url, false);
        let request = server.join().unwrap();
        assert!(!request.contains("leave the background"));
        assert!(e.text.contains("The background is"));
    }

    #[test]
    fn unreachable_or_bad_endpoint_falls_back_to_rules() {
        // A port that was just free: nothing listens there.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = extend_prompt_via(
            "a red circle",
            2,
            &format!("http://127.0.0.1:{port}/v1"),
            false,
        );
        assert_eq!(e.source, PromptSource::Rules);
        assert_eq!(e.text, extend_prompt("a red circle", 2, false).text);
        assert!(e.fallback_reason.is_some());
        let (url, server) = fake_server(r#"{"error":"no"}"#);
        let e = extend_prompt_via("a red circle", 2, &url, false);
        server.join().unwrap();
        assert_eq!(e.source, PromptSource::Rules);
        assert!(e.fallback_reason.unwrap().contains("choices"));
    }
}

//! The prompt policy: a small lexicon per blocked category, matched on whole words after
//! folding case, accents-free ASCII look-alikes (`p0rn`, `s3x`) and punctuation (`self-harm`,
//! `self_harm`). A floor, not a classifier: it stops the plain asks and names why, so a
//! refusal is never a mystery; a deployment that needs more puts a moderation model in front.
//!
//! Terms ending in `*` match any word that starts with them (`decapitat*`: decapitate,
//! decapitated, decapitation). Sexual words next to words for children are their own category.

use std::fmt;

/// Why a prompt is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    SexualMinors,
    Sexual,
    Gore,
    SelfHarm,
    Hate,
    MassViolence,
}

impl Category {
    pub fn name(self) -> &'static str {
        match self {
            Category::SexualMinors => "sexual content involving minors",
            Category::Sexual => "sexual content",
            Category::Gore => "graphic violence",
            Category::SelfHarm => "self-harm",
            Category::Hate => "hate symbols and extremism",
            Category::MassViolence => "mass violence",
        }
    }
}

/// A refused prompt: the category and the words that triggered it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Blocked {
    pub category: Category,
    pub terms: Vec<String>,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the prompt was refused by the content policy ({}: {}); rephrase it without them",
            self.category.name(),
            self.terms.join(", ")
        )
    }
}

impl std::error::Error for Blocked {}

const SEXUAL: &[&str] = &[
    "nude",
    "nudes",
    "naked",
    "nudity",
    "porn*",
    "sex",
    "sexual*",
    "nsfw",
    "xxx",
    "erotic*",
    "genital*",
    "penis",
    "vagina",
    "topless",
    "orgasm*",
    "masturbat*",
    "hentai",
    "intercourse",
    "fetish*",
];
const MINORS: &[&str] = &[
    "child",
    "children",
    "kid",
    "kids",
    "minor",
    "minors",
    "teen",
    "teens",
    "teenage*",
    "underage",
    "toddler*",
    "infant*",
    "baby",
    "babies",
    "preteen*",
    "schoolgirl*",
    "schoolboy*",
    "loli*",
    "boy",
    "boys",
    "girl",
    "girls",
    "young",
];
const GORE: &[&str] = &[
    "gore",
    "gory",
    "decapitat*",
    "behead*",
    "dismember*",
    "disembowel*",
    "mutilat*",
    "eviscerat*",
    "entrails",
    "tortur*",
];
const SELF_HARM: &[&str] = &[
    "suicide",
    "suicidal",
    "self harm",
    "kill myself",
    "kill yourself",
    "cut myself",
    "hang myself",
    "slit wrists",
    "slitting wrists",
];
const HATE: &[&str] = &[
    "nazi*",
    "swastika*",
    "kkk",
    "ku klux",
    "heil hitler",
    "white power",
    "ethnic cleansing",
    "genocide",
];
const MASS_VIOLENCE: &[&str] = &[
    "mass shooting",
    "school shooting",
    "terrorist attack",
    "massacre*",
    "shooting people",
    "bombing people",
    "make a bomb",
];

/// Lower-case ASCII words, with common look-alikes folded back (`0`→o, `3`→e, `$`→s …).
fn words(text: &str) -> Vec<String> {
    let folded: String = text
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            '0' => 'o',
            '1' | '!' | '|' => 'i',
            '3' => 'e',
            '4' | '@' => 'a',
            '5' | '$' => 's',
            '7' => 't',
            c if c.is_ascii_alphanumeric() => c,
            _ => ' ',
        })
        .collect();
    folded.split_whitespace().map(str::to_string).collect()
}

/// Every term of `lexicon` found in `words`, as written in the lexicon.
fn matches(words: &[String], lexicon: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for term in lexicon {
        let parts: Vec<&str> = term.split(' ').collect();
        let hit = words.windows(parts.len()).any(|window| {
            window
                .iter()
                .zip(&parts)
                .all(|(w, p)| match p.strip_suffix('*') {
                    Some(stem) => w.starts_with(stem),
                    None => w == p,
                })
        });
        if hit {
            found.push(term.trim_end_matches('*').to_string());
        }
    }
    found
}

/// Refuses a prompt in a blocked category; `Ok` otherwise (an empty prompt is allowed: it asks
/// for an unconditional sample).
pub fn check_prompt(prompt: &str) -> Result<(), Blocked> {
    let w = words(prompt);
    let sexual = matches(&w, SEXUAL);
    if !sexual.is_empty() {
        let minors = matches(&w, MINORS);
        if !minors.is_empty() {
            return Err(Blocked {
                category: Category::SexualMinors,
                terms: [sexual, minors].concat(),
            });
        }
        return Err(Blocked {
            category: Category::Sexual,
            terms: sexual,
        });
    }
    for (category, lexicon) in [
        (Category::Gore, GORE),
        (Category::SelfHarm, SELF_HARM),
        (Category::Hate, HATE),
        (Category::MassViolence, MASS_VIOLENCE),
    ] {
        let terms = matches(&w, lexicon);
        if !terms.is_empty() {
            return Err(Blocked { category, terms });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn category(p: &str) -> Option<Category> {
        check_prompt(p).err().map(|b| b.category)
    }

    #[test]
    fn blocked_asks_are_refused_with_their_category_and_words() {
        let b = check_prompt("a naked girl on a beach").unwrap_err();
        assert_eq!(b.category, Category::SexualMinors);
        assert_eq!(b.terms, vec!["naked", "girl"]);
        assert!(b
            .to_string()
            .contains("sexual content involving minors: naked, girl"));
        assert_eq!(category("NSFW p0rn clip"), Some(Category::Sexual));
        assert_eq!(category("a man is decapitated"), Some(Category::Gore));
        assert_eq!(category("how to self-harm"), Some(Category::SelfHarm));
        assert_eq!(category("a flag with a sw@stika"), Some(Category::Hate));
        assert_eq!(category("a school shooting"), Some(Category::MassViolence));
    }

    #[test]
    fn ordinary_prompts_and_words_that_merely_contain_a_term_pass() {
        for p in [
            "",
            "a red ball bounces across a blue floor",
            "a boy kicks a ball in the park",
            "the comet shoots across the night sky",
            "an essex landscape with a sussex barn",
            "a middlesex county road at dusk",
            "the gorge at sunset",
            "minor chords on a piano",
        ] {
            assert_eq!(check_prompt(p), Ok(()), "{p}");
        }
    }

    #[test]
    fn every_shapes_world_caption_passes() {
        for split in [tessera_world::Split::Train, tessera_world::Split::Val] {
            for index in 0..500 {
                let opts = tessera_world::SampleOptions {
                    split,
                    ..Default::default()
                };
                let scene = tessera_world::sample_scene(&opts, index).unwrap();
                for caption in [
                    tessera_world::dense_caption(&scene),
                    tessera_world::short_caption(&scene),
                ] {
                    assert_eq!(check_prompt(&caption), Ok(()), "{caption}");
                }
            }
        }
    }
}

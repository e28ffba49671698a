//! Parity with the Python `tokenizers` package and transformers'
//! `apply_chat_template` (fixtures from tools/fixtures/gen_llm.py).

use super::*;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llm")
}

fn json(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join(name)).unwrap()).unwrap()
}

#[test]
fn encodings_match_python_tokenizers() {
    let refs = json("encodings.json");
    let mut checked = 0;
    for (name, rows) in refs.as_object().unwrap() {
        let tok = TextTokenizer::from_dir(&fixtures().join(name)).unwrap();
        for r in rows.as_array().unwrap() {
            let text = r["text"].as_str().unwrap();
            let e = tok.encode(text, true).unwrap();
            let ids: Vec<u32> = serde_json::from_value(r["ids"].clone()).unwrap();
            let toks: Vec<String> = serde_json::from_value(r["tokens"].clone()).unwrap();
            let offs: Vec<(usize, usize)> = serde_json::from_value(r["offsets"].clone()).unwrap();
            assert_eq!(e.ids, ids, "{name}: {text:?}");
            assert_eq!(e.tokens, toks, "{name}: {text:?}");
            assert_eq!(e.offsets, offs, "{name}: {text:?}");
            assert_eq!(
                tok.decode(&ids, false).unwrap(),
                r["decoded"].as_str().unwrap(),
                "{name}"
            );
            checked += 1;
        }
        let texts: Vec<&str> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["text"].as_str().unwrap())
            .collect();
        let batch = tok.encode_batch(&texts, true).unwrap();
        for (b, t) in batch.iter().zip(&texts) {
            assert_eq!(b, &tok.encode(t, true).unwrap());
        }
    }
    assert!(checked >= 40, "only {checked} reference encodings");
}

#[test]
fn chat_template_matches_transformers() {
    let dir = fixtures().join("qwen2");
    let t = ChatTemplate::from_dir(&dir).unwrap();
    let tok = TextTokenizer::from_dir(&dir).unwrap();
    for r in json("chat.json").as_array().unwrap() {
        let msgs: Vec<ChatMessage> = serde_json::from_value(r["messages"].clone()).unwrap();
        let text = t
            .render(&msgs, r["add_generation_prompt"].as_bool().unwrap())
            .unwrap();
        assert_eq!(text, r["text"].as_str().unwrap());
        let ids: Vec<u32> = serde_json::from_value(r["ids"].clone()).unwrap();
        assert_eq!(tok.encode(&text, false).unwrap().ids, ids);
        tok.check_specials(&text).unwrap();
    }
    assert_eq!(t.eos_token.as_deref(), Some("<|im_end|>"));
}

#[test]
fn digit_split_groups_and_keeps_offsets() {
    let dir = fixtures().join("tok_bytelevel");
    let base = TextTokenizer::from_dir(&dir).unwrap();
    let text = "n = 9999999 and <|im_end|> 89";
    let plain = base.encode(text, true).unwrap();
    for (split, groups) in [
        (DigitSplit::R2L3, vec!["9", "999", "999"]),
        (DigitSplit::Single, vec!["9"; 7]),
    ] {
        let tok = base.clone().with_digit_split(split);
        let e = tok.encode(text, true).unwrap();
        assert_ne!(e.ids, plain.ids, "{split:?} changed nothing");
        // no token crosses a group boundary, and the digit tokens spell the groups
        let chars: Vec<char> = text.chars().collect();
        let pieces: Vec<String> = e
            .offsets
            .iter()
            .map(|&(a, b)| chars[a..b].iter().collect())
            .collect();
        let digits: Vec<String> = pieces
            .iter()
            .map(|p| p.trim_start().to_string())
            .filter(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
            .collect();
        let mut joined = String::new();
        for d in &digits {
            joined.push_str(d);
        }
        assert!(joined.starts_with("9999999"), "{split:?}: {digits:?}");
        let mut at = 0;
        for g in &groups {
            // each group is covered by whole tokens: a token never straddles two groups
            let mut acc = String::new();
            while acc.len() < g.len() {
                acc.push_str(&digits[at]);
                at += 1;
            }
            assert_eq!(&acc, g, "{split:?}");
        }
        assert!(
            e.tokens.contains(&"<|im_end|>".to_string()),
            "special token kept whole"
        );
        assert_eq!(tok.decode(&e.ids, false).unwrap(), text, "round trip");
    }
}

#[test]
fn bad_inputs_are_errors() {
    let tok = TextTokenizer::from_dir(&fixtures().join("qwen2")).unwrap();
    assert!(
        matches!(tok.check_specials("hi <|im_stat|>"), Err(TextError::UnknownSpecial(s)) if s == "<|im_stat|>")
    );
    tok.check_specials("a <| b |> c and <|im_start|>").unwrap();
    assert!(matches!(
        tok.decode(&[5, 100000], false),
        Err(TextError::IdOutOfVocab { id: 100000, .. })
    ));
    assert!(matches!(
        TextTokenizer::from_dir(&fixtures()),
        Err(TextError::MissingTokenizer(_))
    ));
    let e = ChatTemplate::from_dir(&fixtures().join("tok_bpe")).unwrap_err();
    assert!(matches!(e, TextError::NoChatTemplate { .. }));
}

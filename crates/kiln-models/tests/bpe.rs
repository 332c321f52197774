//! Byte-level BPE tokenizer tests against token ids from Hugging Face's
//! `tokenizers` (tests/data/bpe_golden.json, made by tests/data/gen_bpe_golden.py
//! from the SmolLM2 GGUF's vocabulary), plus round trips, the chat template,
//! streaming decode and loading from a Hugging Face tokenizer.json.

mod common;

use kiln_models::bpe::{BpeTokenizer, ChatMessage, PreTokenizer, StreamDecoder};
use std::sync::OnceLock;

fn smollm2() -> &'static BpeTokenizer {
    static T: OnceLock<BpeTokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let f = kiln_core::io::read_gguf(common::smollm2_gguf()).unwrap();
        BpeTokenizer::from_gguf_metadata(&f.metadata).unwrap()
    })
}

fn golden() -> Vec<(String, Vec<u32>)> {
    let text = include_str!("data/bpe_golden.json");
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let ids = c["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
            (c["text"].as_str().unwrap().to_string(), ids)
        })
        .collect()
}

#[test]
fn encode_matches_hf_tokenizers() {
    let t = smollm2();
    assert_eq!(t.vocab_size(), 49152);
    assert_eq!(t.pre_tokenizer(), PreTokenizer::Smollm);
    assert_eq!((t.bos(), t.eos()), (Some(1), Some(2)));
    let cases = golden();
    assert!(cases.len() >= 20);
    for (text, ids) in &cases {
        assert_eq!(&t.encode(text), ids, "encode({text:?})");
        // Bytes without a token (a few control characters) are dropped, as by HF.
        let kept: String = text.chars().filter(|c| !matches!(*c as u32, 4 | 6 | 19 | 20 | 22 | 29)).collect();
        assert_eq!(t.decode(ids), kept, "decode of {text:?}");
    }
    assert_eq!(t.encode("Once upon a time,"), [6403, 1980, 253, 655, 28]);
}

#[test]
fn special_tokens_stay_whole() {
    let t = smollm2();
    let ids = t.encode("<|im_start|>user\nHi<|im_end|>");
    assert_eq!(ids[0], 1);
    assert_eq!(*ids.last().unwrap(), 2);
    assert!(t.is_special(1) && t.is_special(2) && !t.is_special(28));
    // A near miss is ordinary text.
    let near = t.encode("<|im_start|");
    assert!(!near.contains(&1));
    assert_eq!(t.decode(&near), "<|im_start|");
}

#[test]
fn round_trips_varied_text() {
    let t = smollm2();
    let long = "x".repeat(500);
    let texts = [
        "Ünïcödé ⅲ ½ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ﷽ \u{200d} \u{feff}",
        "mixed\r\nline\rendings\u{2028}and\u{85}separators",
        "    indented\n\t\ttabs   \n",
        "numbers 0 01 1234567890 ١٢٣ 12.5e-3",
        "a'b 'tis don't 'S 'LL ''",
        long.as_str(),
        "🦀🦀 rust 🦀",
        "\u{0}\u{1}\u{7f} control bytes that SmolLM2 has tokens for",
    ];
    for s in texts {
        let ids = t.encode(s);
        assert_eq!(t.decode(&ids), s);
    }
    assert!(t.encode("").is_empty());
}

#[test]
fn streaming_decode_holds_back_partial_characters() {
    let t = smollm2();
    let s = "héllo 🙂 日本語 done";
    let ids = t.encode(s);
    let mut d = StreamDecoder::new();
    let mut out = String::new();
    let mut saw_partial = false;
    for &id in &ids {
        let piece = d.push(t, id);
        if piece.is_empty() {
            saw_partial = true;
        }
        out.push_str(&piece);
    }
    out.push_str(&d.finish());
    assert_eq!(out, s);
    // The emoji is split over byte tokens, so some pushes yield nothing.
    assert!(saw_partial);
    // Invalid bytes become U+FFFD instead of being lost.
    let lone = t.encode("\u{e9}");
    assert_eq!(lone.len(), 1);
}

#[test]
fn chat_template_is_chatml_with_default_system() {
    let t = smollm2();
    let s = t.apply_chat_template(&[ChatMessage::new("user", "Hi")], true).unwrap();
    assert_eq!(
        s,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    let s = t
        .apply_chat_template(&[ChatMessage::new("system", "Be brief."), ChatMessage::new("user", "Hi")], false)
        .unwrap();
    assert_eq!(s, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
    let ids = t.encode(&s);
    assert_eq!(ids.iter().filter(|&&i| i == 1).count(), 2);
}

#[test]
fn hf_tokenizer_json_loads_the_same_tokenizer() {
    // A tiny tokenizer.json: byte alphabet + a few merges + one added token.
    let mut vocab = serde_json::Map::new();
    let b2u: Vec<String> = {
        // GPT-2 byte alphabet, as in the tokenizer.
        let mut out = Vec::new();
        let mut n = 0;
        for b in 0..256u32 {
            let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
            let c = if printable {
                char::from_u32(b).unwrap()
            } else {
                n += 1;
                char::from_u32(255 + n).unwrap()
            };
            out.push(c.to_string());
        }
        out
    };
    for (i, s) in b2u.iter().enumerate() {
        vocab.insert(s.clone(), (i as u64).into());
    }
    for (i, s) in ["he", "ll", "hell", "hello", "Ġw"].iter().enumerate() {
        vocab.insert(s.to_string(), (256 + i as u64).into());
    }
    let json = serde_json::json!({
        "added_tokens": [{"id": 261, "content": "<eos>", "special": true}],
        "pre_tokenizer": {"type": "ByteLevel"},
        "model": {"type": "BPE", "vocab": vocab, "merges": ["h e", "l l", "he ll", ["hell", "o"], "Ġ w"]}
    });
    let cfg = r#"{"eos_token": "<eos>", "chat_template": "{{'<|im_start|>'}}"}"#;
    let t = BpeTokenizer::from_hf_json(&json.to_string(), Some(cfg)).unwrap();
    assert_eq!(t.pre_tokenizer(), PreTokenizer::Gpt2);
    assert_eq!(t.eos(), Some(261));
    let ids = t.encode("hello world<eos>");
    assert_eq!(ids[0], 259);
    assert_eq!(ids[1], 260);
    assert_eq!(*ids.last().unwrap(), 261);
    assert_eq!(t.decode(&ids), "hello world<eos>");
    // The converted SmolLM2 tokenizer.json gives the same ids as the GGUF.
    if let Some(dir) = common::smollm2_hf_dir() {
        let j = std::fs::read_to_string(dir.join("tokenizer.json")).unwrap();
        let c = std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap();
        let h = BpeTokenizer::from_hf_json(&j, Some(&c)).unwrap();
        assert_eq!(h.pre_tokenizer(), PreTokenizer::Smollm);
        assert_eq!((h.bos(), h.eos()), (Some(1), Some(2)));
        for (text, ids) in golden() {
            assert_eq!(h.encode(&text), ids, "{text:?}");
        }
    }
}

#[test]
fn bad_tokenizer_inputs_are_errors() {
    assert!(BpeTokenizer::from_hf_json("not json", None).is_err());
    assert!(BpeTokenizer::from_hf_json(r#"{"model": {"type": "WordPiece"}}"#, None).is_err());
    // A merge naming an unknown token.
    let tokens: Vec<String> = (0..256u32).map(|b| char::from_u32(b + 256).unwrap().to_string()).collect();
    assert!(BpeTokenizer::new(&tokens, &[], &[], PreTokenizer::Gpt2).is_err()); // lacks the byte alphabet
    let mut meta = std::collections::BTreeMap::new();
    meta.insert("tokenizer.ggml.model".to_string(), kiln_core::io::GgufValue::String("llama".into()));
    assert!(BpeTokenizer::from_gguf_metadata(&meta).is_err());
    // A non-ChatML template is refused rather than mis-rendered.
    let mut t = smollm2().clone();
    t.set_chat_template(Some("{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}".into()));
    assert!(t.apply_chat_template(&[ChatMessage::new("user", "x")], true).is_err());
    t.set_chat_template(None);
    assert_eq!(
        t.apply_chat_template(&[ChatMessage::new("user", "x")], false).unwrap(),
        "<|im_start|>user\nx<|im_end|>\n"
    );
    let e = BpeTokenizer::new(&["a".to_string()], &["a b".to_string()], &[], PreTokenizer::Gpt2);
    assert!(e.is_err());
}

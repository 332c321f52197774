//! GPT-2 style byte-level BPE tokenizer, as used by SmolLM2 and many
//! LLaMA-family models: special tokens are matched whole first, the rest is
//! split by a pre-tokenizer (the GPT-2 pattern, optionally with every digit
//! on its own as in SmolLM's `smollm` pre-tokenizer), each piece's bytes are
//! mapped to byte tokens and merged by merge rank.
//!
//! Loads from a GGUF's `tokenizer.ggml.*` metadata ([`BpeTokenizer::from_gguf_metadata`])
//! or a Hugging Face `tokenizer.json` ([`BpeTokenizer::from_hf_json`]).
//! Also renders the ChatML chat template ([`BpeTokenizer::apply_chat_template`])
//! and decodes incrementally for streaming ([`StreamDecoder`]).

use crate::unicode_tables::{LETTER, NUMBER};
use kiln_core::io::GgufValue;
use kiln_core::{Error, Result};
use std::collections::{BTreeMap, HashMap};

const OP: &str = "BpeTokenizer";

/// How text is split before BPE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreTokenizer {
    /// The GPT-2 pattern `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
    Gpt2,
    /// Every `\p{N}` character on its own, then the GPT-2 pattern (llama.cpp's
    /// `smollm`, Hugging Face's `Digits(individual_digits)` + `ByteLevel`).
    Smollm,
}

/// One chat message for [`BpeTokenizer::apply_chat_template`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message.
    pub fn new(role: &str, content: &str) -> ChatMessage {
        ChatMessage { role: role.into(), content: content.into() }
    }
}

/// A byte-level BPE tokenizer.
#[derive(Clone, Debug)]
pub struct BpeTokenizer {
    id_to_bytes: Vec<Vec<u8>>,
    /// The token of each byte (`None` when the vocabulary lacks it: such bytes
    /// are dropped, as Hugging Face's BPE does without an unknown token).
    byte_ids: [Option<u32>; 256],
    /// `(left, right) -> (rank, merged)`.
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Special tokens, longest first.
    specials: Vec<(String, u32)>,
    is_special: Vec<bool>,
    pre: PreTokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
    chat_template: Option<String>,
}

/// GPT-2's reversible map from bytes to printable characters.
fn bytes_to_unicode() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        out[b as usize] = if printable {
            char::from_u32(b).unwrap()
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap()
        };
    }
    out
}

fn in_table(table: &[(u32, u32)], c: char) -> bool {
    let c = c as u32;
    table
        .binary_search_by(|&(a, b)| {
            if b < c {
                std::cmp::Ordering::Less
            } else if a > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

fn is_letter(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    in_table(LETTER, c)
}

fn is_number(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    in_table(NUMBER, c)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Number,
    Space,
    Other,
}

fn class(c: char) -> Class {
    if c.is_whitespace() {
        Class::Space
    } else if is_letter(c) {
        Class::Letter
    } else if is_number(c) {
        Class::Number
    } else {
        Class::Other
    }
}

/// Splits `s` by the GPT-2 pattern, pushing byte ranges.
fn split_gpt2(s: &str, base: usize, out: &mut Vec<(usize, usize)>) {
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    let n = chars.len();
    let pos = |i: usize| if i < n { chars[i].0 } else { s.len() };
    let mut i = 0;
    while i < n {
        let c = chars[i].1;
        // Contractions.
        if c == '\'' && i + 1 < n {
            let rest = &s[chars[i + 1].0..];
            let len = ["s", "t", "re", "ve", "m", "ll", "d"].iter().find(|p| rest.starts_with(**p)).map(|p| p.len());
            if let Some(len) = len {
                let end = chars[i + 1].0 + len;
                out.push((base + chars[i].0, base + end));
                i = chars.partition_point(|&(p, _)| p < end);
                continue;
            }
        }
        // ` ?X+` for X in letters, numbers, others.
        let (start, first) = if c == ' ' && i + 1 < n && class(chars[i + 1].1) != Class::Space {
            (i + 1, class(chars[i + 1].1))
        } else {
            (i, class(c))
        };
        if first != Class::Space {
            let mut j = start + 1;
            while j < n && class(chars[j].1) == first {
                j += 1;
            }
            out.push((base + pos(i), base + pos(j)));
            i = j;
            continue;
        }
        // `\s+(?!\S)|\s+`.
        let mut j = i + 1;
        while j < n && chars[j].1.is_whitespace() {
            j += 1;
        }
        if j < n && j - i > 1 {
            j -= 1;
        }
        out.push((base + pos(i), base + pos(j)));
        i = j;
    }
}

impl BpeTokenizer {
    /// Builds a tokenizer from token strings (GPT-2 byte-level form), merges
    /// (`"left right"`), the ids of special tokens (matched whole in text),
    /// and the pre-tokenizer.
    pub fn new(tokens: &[String], merges: &[String], special: &[u32], pre: PreTokenizer) -> Result<BpeTokenizer> {
        let b2u = bytes_to_unicode();
        let mut u2b = HashMap::new();
        for (b, &c) in b2u.iter().enumerate() {
            u2b.insert(c, b as u8);
        }
        let mut vocab: HashMap<&str, u32> = HashMap::with_capacity(tokens.len());
        let mut id_to_bytes = Vec::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            vocab.insert(t.as_str(), i as u32);
            // Tokens outside the byte alphabet (e.g. some special tokens) decode as their UTF-8.
            let bytes: Option<Vec<u8>> = t.chars().map(|c| u2b.get(&c).copied()).collect();
            id_to_bytes.push(bytes.unwrap_or_else(|| t.as_bytes().to_vec()));
        }
        let mut byte_ids = [None; 256];
        for (b, &c) in b2u.iter().enumerate() {
            byte_ids[b] = vocab.get(c.to_string().as_str()).copied();
        }
        if byte_ids.iter().filter(|b| b.is_some()).count() < 128 {
            return Err(Error::invalid(OP, "The vocabulary lacks most byte tokens: not a byte-level BPE vocabulary."));
        }
        let mut merge_map = HashMap::with_capacity(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            let (l, r) = m.split_once(' ').ok_or_else(|| {
                Error::invalid(OP, format!("Merge {rank} ('{m}') is not two tokens separated by a space."))
            })?;
            let get = |t: &str| {
                vocab.get(t).copied().ok_or_else(|| {
                    Error::invalid(OP, format!("Merge {rank} ('{m}') uses '{t}', which is not in the vocabulary."))
                })
            };
            let merged = format!("{l}{r}");
            merge_map.entry((get(l)?, get(r)?)).or_insert((rank as u32, get(&merged)?));
        }
        let mut is_special = vec![false; tokens.len()];
        let mut specials = Vec::new();
        for &id in special {
            let t = tokens
                .get(id as usize)
                .ok_or_else(|| Error::invalid(OP, format!("Special token id {id} is out of range.")))?;
            if !t.is_empty() {
                is_special[id as usize] = true;
                specials.push((t.clone(), id));
            }
        }
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        Ok(BpeTokenizer {
            id_to_bytes,
            byte_ids,
            merges: merge_map,
            specials,
            is_special,
            pre,
            bos: None,
            eos: None,
            chat_template: None,
        })
    }

    /// From a GGUF's metadata (`tokenizer.ggml.model = gpt2`; tokens, merges,
    /// token types, `pre`, bos/eos ids, chat template).
    pub fn from_gguf_metadata(meta: &BTreeMap<String, GgufValue>) -> Result<BpeTokenizer> {
        let string = |k: &str| match meta.get(k) {
            Some(GgufValue::String(s)) => Some(s.clone()),
            _ => None,
        };
        let strings = |k: &str| -> Result<Vec<String>> {
            match meta.get(k) {
                Some(GgufValue::Array(items)) => items
                    .iter()
                    .map(|v| match v {
                        GgufValue::String(s) => Ok(s.clone()),
                        _ => Err(Error::invalid(OP, format!("{k} must be an array of strings."))),
                    })
                    .collect(),
                _ => Err(Error::invalid(OP, format!("The GGUF has no {k} string array."))),
            }
        };
        let int = |k: &str| -> Option<u32> {
            match meta.get(k)? {
                GgufValue::U32(v) => Some(*v),
                GgufValue::I32(v) => u32::try_from(*v).ok(),
                GgufValue::U64(v) => u32::try_from(*v).ok(),
                GgufValue::I64(v) => u32::try_from(*v).ok(),
                _ => None,
            }
        };
        match string("tokenizer.ggml.model").as_deref() {
            Some("gpt2") => {}
            other => {
                return Err(Error::invalid(
                    OP,
                    format!("Unsupported tokenizer model {other:?} (only byte-level BPE, 'gpt2', is implemented)."),
                ))
            }
        }
        let pre = match string("tokenizer.ggml.pre").as_deref() {
            Some("smollm") => PreTokenizer::Smollm,
            None | Some("gpt2") | Some("default") => PreTokenizer::Gpt2,
            Some(p) => return Err(Error::invalid(OP, format!("Unsupported pre-tokenizer '{p}'."))),
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?;
        // Token types: 3 = control, 4 = user-defined; both are matched whole.
        let special: Vec<u32> = match meta.get("tokenizer.ggml.token_type") {
            Some(GgufValue::Array(types)) => types
                .iter()
                .enumerate()
                .filter(|(_, t)| {
                    matches!(t, GgufValue::I32(3) | GgufValue::I32(4) | GgufValue::U32(3) | GgufValue::U32(4))
                })
                .map(|(i, _)| i as u32)
                .collect(),
            _ => Vec::new(),
        };
        let mut t = BpeTokenizer::new(&tokens, &merges, &special, pre)?;
        t.bos = int("tokenizer.ggml.bos_token_id").filter(|&i| (i as usize) < tokens.len());
        t.eos = int("tokenizer.ggml.eos_token_id").filter(|&i| (i as usize) < tokens.len());
        t.chat_template = string("tokenizer.chat_template");
        Ok(t)
    }

    /// From a Hugging Face `tokenizer.json` (a byte-level BPE model), with
    /// the optional `tokenizer_config.json` (bos/eos tokens, chat template).
    pub fn from_hf_json(tokenizer_json: &str, tokenizer_config: Option<&str>) -> Result<BpeTokenizer> {
        let bad = |m: &str| Error::invalid(OP, format!("tokenizer.json: {m}"));
        let v: serde_json::Value = serde_json::from_str(tokenizer_json).map_err(|e| bad(&e.to_string()))?;
        let model = &v["model"];
        if model["type"].as_str() != Some("BPE") {
            return Err(bad("only a BPE model is supported"));
        }
        let vocab = model["vocab"].as_object().ok_or_else(|| bad("model.vocab is not an object"))?;
        let mut tokens = vec![String::new(); vocab.len()];
        for (t, id) in vocab {
            let id = id.as_u64().ok_or_else(|| bad("a vocabulary id is not an integer"))? as usize;
            if id >= tokens.len() {
                tokens.resize(id + 1, String::new());
            }
            tokens[id] = t.clone();
        }
        let mut special = Vec::new();
        for a in v["added_tokens"].as_array().into_iter().flatten() {
            let id = a["id"].as_u64().ok_or_else(|| bad("added token without id"))? as u32;
            let content = a["content"].as_str().ok_or_else(|| bad("added token without content"))?.to_string();
            if id as usize >= tokens.len() {
                tokens.resize(id as usize + 1, String::new());
            }
            if tokens[id as usize].is_empty() {
                tokens[id as usize] = content;
            }
            special.push(id);
        }
        let merges: Vec<String> = model["merges"]
            .as_array()
            .ok_or_else(|| bad("model.merges is not an array"))?
            .iter()
            .map(|m| match m {
                serde_json::Value::String(s) => Ok(s.clone()),
                serde_json::Value::Array(p) if p.len() == 2 => {
                    Ok(format!("{} {}", p[0].as_str().unwrap_or(""), p[1].as_str().unwrap_or("")))
                }
                _ => Err(bad("a merge is neither a string nor a pair")),
            })
            .collect::<Result<_>>()?;
        let pre_json = v["pre_tokenizer"].to_string();
        let pre = if pre_json.contains("\"Digits\"") && pre_json.contains("\"individual_digits\":true") {
            PreTokenizer::Smollm
        } else {
            PreTokenizer::Gpt2
        };
        let mut t = BpeTokenizer::new(&tokens, &merges, &special, pre)?;
        if let Some(cfg) = tokenizer_config {
            let c: serde_json::Value =
                serde_json::from_str(cfg).map_err(|e| Error::invalid(OP, format!("tokenizer_config.json: {e}")))?;
            let id_of = |k: &str| -> Option<u32> {
                let s = match &c[k] {
                    serde_json::Value::String(s) => s.as_str(),
                    serde_json::Value::Object(o) => o.get("content")?.as_str()?,
                    _ => return None,
                };
                t.specials.iter().find(|(n, _)| n == s).map(|&(_, id)| id)
            };
            t.bos = id_of("bos_token");
            t.eos = id_of("eos_token");
            t.chat_template = c["chat_template"].as_str().map(str::to_string);
        }
        Ok(t)
    }

    /// Sets the beginning/end-of-sequence ids.
    pub fn set_bos_eos(&mut self, bos: Option<u32>, eos: Option<u32>) {
        self.bos = bos;
        self.eos = eos;
    }

    /// Replaces the chat template (`None`: plain ChatML without a default system message).
    pub fn set_chat_template(&mut self, template: Option<String>) {
        self.chat_template = template;
    }

    /// The number of tokens.
    pub fn vocab_size(&self) -> usize {
        self.id_to_bytes.len()
    }

    /// The beginning-of-sequence id, if known.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// The end-of-sequence id, if known.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// Whether `id` is a special (control) token.
    pub fn is_special(&self, id: u32) -> bool {
        self.is_special.get(id as usize).copied().unwrap_or(false)
    }

    /// The pre-tokenizer.
    pub fn pre_tokenizer(&self) -> PreTokenizer {
        self.pre
    }

    /// The chat template text, if the model ships one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The pieces (byte ranges) the pre-tokenizer cuts `s` into.
    pub fn pre_tokenize(&self, s: &str) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        match self.pre {
            PreTokenizer::Gpt2 => split_gpt2(s, 0, &mut out),
            PreTokenizer::Smollm => {
                let mut start = 0;
                for (p, c) in s.char_indices() {
                    if is_number(c) {
                        if start < p {
                            split_gpt2(&s[start..p], start, &mut out);
                        }
                        out.push((p, p + c.len_utf8()));
                        start = p + c.len_utf8();
                    }
                }
                if start < s.len() {
                    split_gpt2(&s[start..], start, &mut out);
                }
            }
        }
        out
    }

    fn bpe(&self, bytes: &[u8], out: &mut Vec<u32>) {
        let mut syms: Vec<u32> = bytes.iter().filter_map(|&b| self.byte_ids[b as usize]).collect();
        while syms.len() > 1 {
            let mut best: Option<(u32, usize, u32)> = None;
            for i in 0..syms.len() - 1 {
                if let Some(&(rank, merged)) = self.merges.get(&(syms[i], syms[i + 1])) {
                    if best.is_none_or(|b| rank < b.0) {
                        best = Some((rank, i, merged));
                    }
                }
            }
            let Some((_, i, merged)) = best else { break };
            syms[i] = merged;
            syms.remove(i + 1);
        }
        out.extend_from_slice(&syms);
    }

    fn encode_plain(&self, s: &str, out: &mut Vec<u32>) {
        for (a, b) in self.pre_tokenize(s) {
            self.bpe(&s.as_bytes()[a..b], out);
        }
    }

    /// Token ids of `text`; special token strings (e.g. `<|im_start|>`) map to
    /// their ids. No BOS is added (SmolLM2 adds none).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        let mut start = 0;
        let mut i = 0;
        let bytes = text.as_bytes();
        while i < bytes.len() {
            if !self.specials.is_empty() && text.is_char_boundary(i) {
                if let Some((t, id)) = self.specials.iter().find(|(t, _)| text[i..].starts_with(t.as_str())) {
                    self.encode_plain(&text[start..i], &mut out);
                    out.push(*id);
                    i += t.len();
                    start = i;
                    continue;
                }
            }
            i += 1;
        }
        self.encode_plain(&text[start..], &mut out);
        out
    }

    /// The bytes of one token (empty for an unknown id).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.id_to_bytes.get(id as usize).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The text of `ids` (special tokens included; invalid UTF-8 replaced).
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&i| self.token_bytes(i).iter().copied()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Renders a conversation with the model's ChatML template
    /// (`<|im_start|>role\ncontent<|im_end|>\n` per message, plus
    /// `<|im_start|>assistant\n` when `add_generation_prompt`). If the
    /// template inserts a default system message when none is given (as
    /// SmolLM2's does), so does this. Other (non-ChatML) templates are an error.
    pub fn apply_chat_template(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let mut default_system = None;
        if let Some(t) = &self.chat_template {
            if !t.contains("<|im_start|>") {
                return Err(Error::invalid(
                    OP,
                    "Only ChatML chat templates (<|im_start|>role ... <|im_end|>) are supported.".to_string(),
                ));
            }
            const KEY: &str = "<|im_start|>system\n";
            if let Some(p) = t.find(KEY) {
                let rest = &t[p + KEY.len()..];
                if let Some(e) = rest.find("<|im_end|>") {
                    default_system = Some(rest[..e].to_string());
                }
            }
        }
        let mut s = String::new();
        if let (Some(sys), Some(first)) = (&default_system, messages.first()) {
            if first.role != "system" {
                s.push_str(&format!("<|im_start|>system\n{sys}<|im_end|>\n"));
            }
        }
        for m in messages {
            s.push_str(&format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content));
        }
        if add_generation_prompt {
            s.push_str("<|im_start|>assistant\n");
        }
        Ok(s)
    }
}

/// Turns a stream of token ids into text, holding back the bytes of an
/// incomplete UTF-8 character until it is complete.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// A decoder with nothing pending.
    pub fn new() -> StreamDecoder {
        StreamDecoder::default()
    }

    /// Adds a token; returns the text that is now complete.
    pub fn push(&mut self, tok: &BpeTokenizer, id: u32) -> String {
        self.pending.extend_from_slice(tok.token_bytes(id));
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..good]).unwrap_or_default());
                    match e.error_len() {
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..good);
                            return out;
                        }
                        // Invalid bytes: replace them and go on.
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..good + n);
                        }
                    }
                }
            }
        }
    }

    /// Whatever is still pending (invalid UTF-8 replaced).
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

//! A character-level tokenizer: one token per distinct character of the
//! training text, ids in code-point order.

use kiln_core::{Error, Result};
use std::collections::HashMap;

/// Maps characters to ids and back.
#[derive(Clone, Debug, PartialEq)]
pub struct CharTokenizer {
    chars: Vec<char>,
    ids: HashMap<char, u32>,
}

impl CharTokenizer {
    /// The vocabulary of `text`: its distinct characters, sorted.
    pub fn from_text(text: &str) -> Result<CharTokenizer> {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        CharTokenizer::from_chars(chars)
    }
    /// A tokenizer over these characters (ids are positions; no duplicates).
    pub fn from_chars(chars: Vec<char>) -> Result<CharTokenizer> {
        if chars.is_empty() {
            return Err(Error::invalid("CharTokenizer", "The vocabulary is empty."));
        }
        let ids: HashMap<char, u32> = chars.iter().enumerate().map(|(i, &c)| (c, i as u32)).collect();
        if ids.len() != chars.len() {
            return Err(Error::invalid("CharTokenizer", "The vocabulary has duplicate characters."));
        }
        Ok(CharTokenizer { chars, ids })
    }
    /// Number of tokens.
    pub fn vocab_size(&self) -> usize {
        self.chars.len()
    }
    /// The characters, by id.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }
    /// Token ids of `text`; a character outside the vocabulary is an error naming it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        text.chars()
            .map(|c| {
                self.ids.get(&c).copied().ok_or_else(|| {
                    Error::invalid("CharTokenizer.encode", format!("The character {c:?} is not in the vocabulary."))
                })
            })
            .collect()
    }
    /// Text of token ids; an id outside the vocabulary is an error.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        ids.iter()
            .map(|&i| {
                self.chars.get(i as usize).copied().ok_or_else(|| {
                    Error::invalid(
                        "CharTokenizer.decode",
                        format!("Token id {i} is outside the vocabulary of {}.", self.chars.len()),
                    )
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let t = CharTokenizer::from_text("hello, world").unwrap();
        assert_eq!(t.vocab_size(), 9);
        assert_eq!(t.chars(), &[' ', ',', 'd', 'e', 'h', 'l', 'o', 'r', 'w']);
        let ids = t.encode("word").unwrap();
        assert_eq!(ids, [8, 6, 7, 2]);
        assert_eq!(t.decode(&ids).unwrap(), "word");
        assert!(t.encode("x").unwrap_err().to_string().contains("'x'"));
        assert!(t.decode(&[9]).is_err());
        assert!(CharTokenizer::from_chars(vec!['a', 'a']).is_err());
        assert!(CharTokenizer::from_text("").is_err());
    }
}

//! Phi-2's tokenizer (a `tokenizer.json` read by the `tokenizers` crate, built with its pure-Rust
//! regex engine so it runs on wasm) and streaming detokenization.

use crate::error::{Error, Result};

#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    file: String,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokenizer({}, {} tokens)", self.file, self.vocab_size())
    }
}

impl Tokenizer {
    pub fn from_bytes(file: &str, bytes: &[u8]) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| Error::file(file, format!("not a usable tokenizer.json: {e}")))?;
        Ok(Self {
            inner,
            file: file.to_string(),
        })
    }

    /// Ids of `text` with nothing added (Phi-2 has no BOS and no template).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::file(&self.file, format!("cannot encode text: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| Error::file(&self.file, format!("cannot decode ids: {e}")))
    }

    /// Tokens including added ones (50 295 for Phi-2).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// Turns a stream of token ids into text pieces without ever splitting a UTF-8 character: a
/// byte-level token may end halfway through an emoji or a CJK character, and the decoder shows
/// such a tail as U+FFFD until the next token completes it.
#[derive(Debug, Default, Clone)]
pub struct TokenStream {
    ids: Vec<u32>,
    /// Ids before this index are fully emitted.
    start: usize,
}

impl TokenStream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one id; returns the text it completes, if any.
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let text = tokenizer.decode(&self.ids[self.start..])?;
        if text.is_empty() || text.ends_with('\u{FFFD}') {
            return Ok(None);
        }
        self.start = self.ids.len();
        Ok(Some(text))
    }

    /// Whatever is left at the end of the stream (an incomplete character shows as U+FFFD).
    pub fn finish(&mut self, tokenizer: &Tokenizer) -> Result<Option<String>> {
        if self.start == self.ids.len() {
            return Ok(None);
        }
        let text = tokenizer.decode(&self.ids[self.start..])?;
        self.start = self.ids.len();
        Ok((!text.is_empty()).then_some(text))
    }

    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
}

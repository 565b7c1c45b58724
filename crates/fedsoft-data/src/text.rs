//! Tokenisation for the BERT family: from a `tokenizer.json` or a WordPiece `vocab.txt`, truncated and padded
//! to a fixed length with attention masks.

use crate::error::DataError;
use std::path::Path;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// Token ids, attention mask and token types of a batch, each `n x max_len` row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub max_len: usize,
    pub ids: Vec<u32>,
    pub mask: Vec<u32>,
    pub type_ids: Vec<u32>,
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.ids.len() / self.max_len.max(1)
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    /// Row `i`'s ids.
    pub fn row(&self, i: usize) -> &[u32] {
        &self.ids[i * self.max_len..(i + 1) * self.max_len]
    }
}

/// A tokenizer fixed to one maximum length.
pub struct TextEncoder {
    tokenizer: Tokenizer,
    max_len: usize,
}

impl TextEncoder {
    /// Loads `tokenizer.json` if `dir` has one, else builds the BERT pipeline from `vocab.txt` (lower-cased).
    pub fn from_dir(dir: &Path, max_len: usize) -> Result<Self, DataError> {
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            Self::from_tokenizer_json(&json, max_len)
        } else {
            Self::from_vocab(&dir.join("vocab.txt"), true, max_len)
        }
    }

    pub fn from_tokenizer_json(path: &Path, max_len: usize) -> Result<Self, DataError> {
        let tokenizer =
            Tokenizer::from_file(path).map_err(|e| DataError::file(path, format!("not a tokenizer.json: {e}")))?;
        Self::configure(tokenizer, max_len, path)
    }

    /// The uncased BERT WordPiece pipeline from a vocabulary file.
    pub fn from_vocab(path: &Path, lowercase: bool, max_len: usize) -> Result<Self, DataError> {
        let p = path.to_str().ok_or_else(|| DataError::file(path, "path is not UTF-8"))?;
        if !path.is_file() {
            return Err(DataError::file(path, "missing: need tokenizer.json or vocab.txt"));
        }
        let model = WordPiece::from_file(p)
            .unk_token("[UNK]".into())
            .build()
            .map_err(|e| DataError::file(path, format!("bad vocabulary: {e}")))?;
        let mut tokenizer = Tokenizer::new(model);
        let id =
            |t: &str| tokenizer.token_to_id(t).ok_or_else(|| DataError::file(path, format!("vocabulary lacks {t}")));
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        tokenizer
            .with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
            .map_err(|e| DataError::file(path, e.to_string()))?;
        tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
        tokenizer.with_post_processor(Some(BertProcessing::new(("[SEP]".into(), sep), ("[CLS]".into(), cls))));
        Self::configure(tokenizer, max_len, path)
    }

    fn configure(mut tokenizer: Tokenizer, max_len: usize, origin: &Path) -> Result<Self, DataError> {
        if max_len < 2 {
            return Err(DataError::invalid(
                "data.max_len",
                format!("must be at least 2 ([CLS] and [SEP]), got {max_len}"),
            ));
        }
        let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0);
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: max_len, ..Default::default() }))
            .map_err(|e| DataError::file(origin, e.to_string()))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(max_len),
            pad_id,
            pad_token: "[PAD]".into(),
            ..Default::default()
        }));
        Ok(TextEncoder { tokenizer, max_len })
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Encodes texts with `[CLS] ... [SEP]`, truncation and padding.
    pub fn encode(&self, texts: &[String]) -> Result<Encoded, DataError> {
        let inputs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let enc =
            self.tokenizer.encode_batch(inputs, true).map_err(|e| DataError::invalid("tokenizer", e.to_string()))?;
        let mut out = Encoded { max_len: self.max_len, ids: Vec::new(), mask: Vec::new(), type_ids: Vec::new() };
        for e in enc {
            debug_assert_eq!(e.get_ids().len(), self.max_len);
            out.ids.extend_from_slice(e.get_ids());
            out.mask.extend_from_slice(e.get_attention_mask());
            out.type_ids.extend_from_slice(e.get_type_ids());
        }
        Ok(out)
    }
}

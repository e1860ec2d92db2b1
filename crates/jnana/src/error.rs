//! One error type for the crate. Every variant carries enough context for a user-facing message:
//! weight problems name the file and the tensor, input problems name what was wrong with the input.

use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A weight, config or tokenizer file that cannot be used as it is.
    #[error("{file}: {message}")]
    File { file: String, message: String },

    /// A tensor inside a weight file that is missing, mis-shaped or unreadable.
    #[error("{file}: tensor `{tensor}`: {message}")]
    Tensor {
        file: String,
        tensor: String,
        message: String,
    },

    /// A picture that cannot be decoded or is too large to decode safely.
    #[error("image: {0}")]
    Image(String),

    /// A request that cannot be answered as it stands (empty, malformed, ...).
    #[error("input: {0}")]
    Input(String),

    /// The prompt alone does not fit in the language model's context window.
    #[error(
        "the question is {needed} tokens long but the language model's context holds {limit}; shorten it"
    )]
    ContextOverflow { needed: usize, limit: usize },

    #[error("manifest: {0}")]
    Manifest(String),

    /// Another compute engine (the GPU one) failed; its message says what happened.
    #[error("{0}")]
    Engine(String),

    /// Generation was stopped by the caller.
    #[error("cancelled")]
    Cancelled,

    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A model whose layers went to another engine (see the models' `release_layers`).
    pub fn released(model: &str) -> Self {
        Self::Engine(format!(
            "{model}'s layers were moved to the GPU engine; load the model again to compute on the CPU"
        ))
    }

    pub fn file(file: impl Into<String>, message: impl fmt::Display) -> Self {
        Self::File {
            file: file.into(),
            message: message.to_string(),
        }
    }

    pub fn tensor(
        file: impl Into<String>,
        tensor: impl Into<String>,
        message: impl fmt::Display,
    ) -> Self {
        Self::Tensor {
            file: file.into(),
            tensor: tensor.into(),
            message: message.to_string(),
        }
    }
}

/// Attaches a file name to errors from libraries that do not know which file they were reading.
pub(crate) trait InFile<T> {
    fn in_file(self, file: &str) -> Result<T>;
}

impl<T, E: fmt::Display> InFile<T> for std::result::Result<T, E> {
    fn in_file(self, file: &str) -> Result<T> {
        self.map_err(|e| Error::file(file, e))
    }
}

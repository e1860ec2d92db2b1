#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no GPU adapter is available ({0}); the CPU path still works")]
    NoAdapter(String),
    #[error("the GPU refused to start: {0}")]
    Device(String),
    #[error("the GPU failed: {0}")]
    Failed(String),
    #[error("{what} needs {bytes} bytes in one buffer but this GPU binds at most {limit}")]
    TooLarge {
        what: String,
        bytes: u64,
        limit: u64,
    },
    #[error("shape mismatch in {op}: {detail}")]
    Shape { op: &'static str, detail: String },
    #[error("preparing weights for the GPU: {0}")]
    Weights(String),
    #[error("the context window is full: {needed} positions needed, {limit} available")]
    ContextFull { needed: usize, limit: usize },
    #[error("reading a result back from the GPU failed: {0}")]
    ReadBack(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Self::Weights(e.to_string())
    }
}

impl From<jnana::Error> for Error {
    fn from(e: jnana::Error) -> Self {
        Self::Weights(e.to_string())
    }
}

impl From<Error> for jnana::Error {
    fn from(e: Error) -> Self {
        Self::Engine(format!("GPU engine: {e}"))
    }
}

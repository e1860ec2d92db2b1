//! The models, one folder or file each, with Hugging Face parameter names.

pub mod activation;
pub mod attention;
pub mod clip_vision;
pub mod phi2;
pub mod projector;
pub mod whisper;

//! The typed messages between the page (UI) and the Web Worker that owns the models.
//!
//! Every message crosses `postMessage` as a JS array `[json, bytes?, pcm?]`: the JSON of one of
//! these enums, plus an optional `Uint8Array` (a picture) and `Float32Array` (audio samples),
//! sent as transferables so large payloads are never copied through JSON.

use serde::{Deserialize, Serialize};

/// Where the models compute, as the user chose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compute {
    /// WebGPU when the browser offers a working adapter, else the CPU.
    #[default]
    Auto,
    /// WebGPU, or a clear message (and the CPU) when it cannot start.
    Webgpu,
    /// The CPU (WebAssembly SIMD), even where WebGPU exists.
    Cpu,
}

impl Compute {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "auto" => Some(Self::Auto),
            "webgpu" => Some(Self::Webgpu),
            "cpu" => Some(Self::Cpu),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Webgpu => "webgpu",
            Self::Cpu => "cpu",
        }
    }
}

/// Sampling settings the user can change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Params {
    pub max_new_tokens: usize,
    pub temperature: f64,
    pub top_p: Option<f64>,
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            max_new_tokens: 200,
            temperature: 0.0,
            top_p: None,
            seed: 299_792_458,
        }
    }
}

/// Audio handed over as PCM in the message's `Float32Array` attachment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PcmInfo {
    pub sample_rate: u32,
    pub channels: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToWorker {
    /// First message: report capabilities and what storage holds.
    Hello,
    /// Fetch a manifest and download its files into storage (resuming partial ones).
    Download {
        manifest_url: String,
    },
    /// Stop downloading; partial files are kept for resuming.
    Pause,
    /// Build the models of a downloaded bundle (no network) and put them where `compute` says.
    Load {
        manifest_url: String,
        #[serde(default)]
        compute: Compute,
    },
    /// Remove a bundle from storage.
    Delete {
        manifest_url: String,
    },
    /// Speech to text: of the attached PCM when `pcm` is given, else of the attached audio
    /// file's bytes (decoded by the model crate, exactly as natively).
    Transcribe {
        pcm: Option<PcmInfo>,
    },
    /// Answer; the picture (if any) is the `Uint8Array` attachment, audio the PCM one.
    Generate {
        text: Option<String>,
        transcript: Option<String>,
        pcm: Option<PcmInfo>,
        params: Params,
    },
    /// Stop the answer being generated.
    Cancel,
    NewConversation,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredBundle {
    pub manifest_url: String,
    pub name: String,
    pub complete: bool,
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct StorageInfo {
    pub used: u64,
    pub quota: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileInfo {
    pub name: String,
    pub role: String,
    pub size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromWorker {
    Ready {
        webgpu: bool,
        stored: Vec<StoredBundle>,
        storage: StorageInfo,
    },
    /// The manifest being downloaded.
    Manifest {
        manifest_url: String,
        name: String,
        files: Vec<FileInfo>,
    },
    DownloadProgress {
        file: String,
        file_done: u64,
        file_total: Option<u64>,
        done: u64,
        total: Option<u64>,
    },
    /// A problem the download recovered from (a dropped connection resumed, a corrupt file
    /// deleted and fetched again).
    DownloadNotice {
        message: String,
    },
    Downloaded {
        manifest_url: String,
    },
    Paused,
    LoadProgress {
        step: usize,
        steps: usize,
        what: String,
    },
    Loaded {
        name: String,
        backend: String,
        note: String,
        vision: bool,
        speech: bool,
        load_ms: f64,
    },
    Transcript {
        text: String,
        seconds: f64,
    },
    Token {
        id: Option<u32>,
        text: Option<String>,
        index: usize,
    },
    Done {
        tokens: Vec<u32>,
        finish: String,
        transcript: Option<String>,
        prompt_positions: usize,
        dropped_turns: usize,
        first_token_ms: f64,
        tokens_per_second: f64,
    },
    Storage(StorageInfo),
    Error {
        during: String,
        message: String,
    },
}

impl ToWorker {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("messages serialize")
    }
}

impl FromWorker {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("messages serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_tagged_json() {
        let m = ToWorker::Generate {
            text: Some("hi".into()),
            transcript: None,
            pcm: Some(PcmInfo {
                sample_rate: 48_000,
                channels: 2,
            }),
            params: Params::default(),
        };
        let json = m.to_json();
        assert!(json.starts_with(r#"{"type":"generate""#), "{json}");
        assert_eq!(serde_json::from_str::<ToWorker>(&json).unwrap(), m);
        let f = FromWorker::Error {
            during: "load".into(),
            message: "x".into(),
        };
        assert_eq!(serde_json::from_str::<FromWorker>(&f.to_json()).unwrap(), f);
    }
}

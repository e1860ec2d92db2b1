//! Where bundles live in storage: `bundles/<key>/` per manifest URL, holding the manifest, the
//! files (large ones in parts), and `state.json` saying which files are complete and verified.
//! `bundles/index.json` lists the manifest URLs stored.

use super::storage;
use crate::protocol::StoredBundle;
use jnana::bundle::{FileEntry, Part};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use web_sys::FileSystemDirectoryHandle;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub manifest_url: String,
    pub name: String,
    /// Every file downloaded and checked.
    pub complete: bool,
    /// Stored file name → its verified sha256 (pinned on first download when the manifest has
    /// none).
    pub verified: BTreeMap<String, String>,
    pub bytes: u64,
}

fn key(manifest_url: &str) -> String {
    jnana::bundle::hex(&Sha256::digest(manifest_url.as_bytes()))[..16].to_string()
}

async fn bundles() -> Result<FileSystemDirectoryHandle, String> {
    storage::subdir(&storage::root().await?, "bundles", true).await
}

pub async fn dir(manifest_url: &str) -> Result<FileSystemDirectoryHandle, String> {
    storage::subdir(&bundles().await?, &key(manifest_url), true).await
}

pub async fn state(dir: &FileSystemDirectoryHandle) -> Option<State> {
    serde_json::from_slice(&storage::read_small(dir, "state.json").await?).ok()
}

pub async fn save_state(dir: &FileSystemDirectoryHandle, state: &State) -> Result<(), String> {
    storage::write_small(
        dir,
        "state.json",
        &serde_json::to_vec(state).expect("state serializes"),
    )
    .await?;
    let mut index = index().await;
    if !index.contains(&state.manifest_url) {
        index.push(state.manifest_url.clone());
        save_index(&index).await?;
    }
    Ok(())
}

async fn index() -> Vec<String> {
    let Ok(dir) = bundles().await else {
        return Vec::new();
    };
    storage::read_small(&dir, "index.json")
        .await
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

async fn save_index(index: &[String]) -> Result<(), String> {
    storage::write_small(
        &bundles().await?,
        "index.json",
        &serde_json::to_vec(index).expect("serializes"),
    )
    .await
}

/// Every bundle in storage, complete or not.
pub async fn list() -> Vec<StoredBundle> {
    let mut out = Vec::new();
    for url in index().await {
        if let Ok(d) = dir(&url).await {
            if let Some(s) = state(&d).await {
                out.push(StoredBundle {
                    manifest_url: s.manifest_url,
                    name: s.name,
                    complete: s.complete,
                    bytes: s.bytes,
                });
            }
        }
    }
    out
}

pub async fn delete(manifest_url: &str) -> Result<(), String> {
    let parent = bundles().await?;
    storage::remove(&parent, &key(manifest_url)).await;
    let index: Vec<String> = index()
        .await
        .into_iter()
        .filter(|u| u != manifest_url)
        .collect();
    save_index(&index).await
}

/// The name a (part of a) file is stored under.
pub fn stored_name(file: &str, part: Option<usize>) -> String {
    match part {
        Some(i) => format!("{file}.part{i}"),
        None => file.to_string(),
    }
}

/// The parts a file is stored in (a whole file is one part).
pub fn parts(entry: &FileEntry) -> Vec<(Option<usize>, Part)> {
    if entry.parts.is_empty() {
        vec![(
            None,
            Part {
                urls: entry.urls.clone(),
                size: entry.size.unwrap_or(0),
                sha256: entry.sha256.clone(),
            },
        )]
    } else {
        entry
            .parts
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, p)| (Some(i), p))
            .collect()
    }
}

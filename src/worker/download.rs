//! Downloads a bundle into storage: per file (or per part), resuming from the bytes already
//! stored with HTTP `Range` (after a reload, a pause or a dropped connection), written chunk by
//! chunk, then checked against the manifest's sha256. A file that fails its checksum is deleted
//! and fetched once more; storage never keeps a corrupt file marked complete.

use super::{now_ms, post, scope, storage, store};
use crate::protocol::FromWorker;
use jnana::bundle::{FileEntry, Manifest, Part};
use js_sys::{Reflect, Uint8Array};
use std::cell::Cell;
use std::rc::Rc;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{FileSystemDirectoryHandle, Headers, Request, RequestInit, Response};

/// Attempts per file part before giving up on a flaky connection.
const ATTEMPTS: usize = 6;

/// Raised to pause; the download stops at the next chunk.
#[derive(Clone, Default)]
pub struct PauseFlag(Rc<Cell<bool>>);

impl PauseFlag {
    pub fn raise(&self) {
        self.0.set(true)
    }
    fn is_raised(&self) -> bool {
        self.0.get()
    }
    pub fn reset(&self) {
        self.0.set(false)
    }
}

pub enum Outcome {
    Complete,
    Paused,
}

/// `url` made absolute against the manifest's own URL.
pub fn resolve(url: &str, base: &str) -> String {
    web_sys::Url::new_with_base(url, base)
        .map(|u| u.href())
        .unwrap_or_else(|_| url.to_string())
}

async fn fetch(url: &str, from: u64) -> Result<Response, String> {
    let init = RequestInit::new();
    init.set_cache(web_sys::RequestCache::NoStore);
    if from > 0 {
        let headers = Headers::new().map_err(|e| storage::describe(&e))?;
        headers
            .set("Range", &format!("bytes={from}-"))
            .map_err(|e| storage::describe(&e))?;
        init.set_headers(&headers);
    }
    let request = Request::new_with_str_and_init(url, &init).map_err(|e| storage::describe(&e))?;
    let response = JsFuture::from(scope().fetch_with_request(&request))
        .await
        .map_err(|e| format!("cannot reach {url}: {}", storage::describe(&e)))?;
    Ok(response.unchecked_into())
}

/// Fetches and parses a manifest (always from the network: it is small and may have changed).
pub async fn manifest(url: &str) -> Result<Manifest, String> {
    let response = fetch(url, 0).await?;
    if !response.ok() {
        return Err(format!("{url}: HTTP {}", response.status()));
    }
    let text = JsFuture::from(response.text().map_err(|e| storage::describe(&e))?)
        .await
        .map_err(|e| storage::describe(&e))?
        .as_string()
        .unwrap_or_default();
    Manifest::from_json(&text).map_err(|e| format!("{url}: {e}"))
}

struct Progress {
    done_before: u64,
    total: Option<u64>,
    last_post: f64,
}

impl Progress {
    fn report(&mut self, file: &str, file_done: u64, file_total: Option<u64>, force: bool) {
        let now = now_ms();
        if force || now - self.last_post > 100.0 {
            self.last_post = now;
            post(&FromWorker::DownloadProgress {
                file: file.to_string(),
                file_done,
                file_total,
                done: self.done_before + file_done,
                total: self.total,
            });
        }
    }
}

/// Downloads every file of the manifest at `manifest_url` that storage does not hold yet.
pub async fn bundle(manifest_url: &str, pause: &PauseFlag) -> Result<Outcome, String> {
    let manifest = manifest(manifest_url).await?;
    let dir = store::dir(manifest_url).await?;
    let mut state = store::state(&dir).await.unwrap_or_default();
    state.manifest_url = manifest_url.to_string();
    state.name = manifest.name.clone();
    state.complete = false;
    // Refuse up front what cannot fit.
    let total = manifest.files.iter().map(|f| f.size).sum::<Option<u64>>();
    if let Some(total) = total {
        let info = storage::estimate().await;
        let stored: u64 = state.bytes;
        let needed = total.saturating_sub(stored);
        if info.quota > 0 && info.used + needed > info.quota {
            return Err(format!(
                "this model needs {} more storage but the browser allows only {} more: free some space or delete a model",
                jnana::bundle::human_bytes(needed),
                jnana::bundle::human_bytes(info.quota.saturating_sub(info.used))
            ));
        }
    }
    storage::write_small(&dir, "manifest.json", manifest.to_json().as_bytes()).await?;
    store::save_state(&dir, &state).await?;
    post(&FromWorker::Manifest {
        manifest_url: manifest_url.to_string(),
        name: manifest.name.clone(),
        files: crate::bridge::file_infos(&manifest),
    });

    storage::persist().await;

    let mut progress = Progress {
        done_before: 0,
        total,
        last_post: 0.0,
    };
    for entry in &manifest.files {
        if state.verified.contains_key(&entry.name) {
            progress.done_before += entry.size.unwrap_or(0);
            continue;
        }
        let mut tries = 0;
        loop {
            tries += 1;
            match file(&dir, manifest_url, entry, pause, &mut progress).await? {
                FileOutcome::Paused => return Ok(Outcome::Paused),
                FileOutcome::Verified(sha) => {
                    state.verified.insert(entry.name.clone(), sha);
                    break;
                }
                FileOutcome::Corrupt(message) => {
                    for (part, _) in store::parts(entry) {
                        storage::remove(&dir, &store::stored_name(&entry.name, part)).await;
                    }
                    if tries >= 2 {
                        return Err(format!(
                            "{message}; it was deleted from storage (tried twice)"
                        ));
                    }
                    post(&FromWorker::DownloadNotice {
                        message: format!("{message}; deleted, downloading it again"),
                    });
                }
            }
        }
        progress.done_before += entry.size.unwrap_or(0);
        state.bytes = progress.done_before;
        store::save_state(&dir, &state).await?;
    }
    state.complete = true;
    store::save_state(&dir, &state).await?;
    Ok(Outcome::Complete)
}

enum FileOutcome {
    Verified(String),
    Corrupt(String),
    Paused,
}

async fn file(
    dir: &FileSystemDirectoryHandle,
    manifest_url: &str,
    entry: &FileEntry,
    pause: &PauseFlag,
    progress: &mut Progress,
) -> Result<FileOutcome, String> {
    let parts = store::parts(entry);
    let mut file_done = 0u64;
    // Each part is read once, for its own hash and the whole file's.
    let mut whole = sha2::Sha256::default();
    for (index, part) in &parts {
        let name = store::stored_name(&entry.name, *index);
        let handle = storage::sync_handle(&storage::file(dir, &name, true).await?).await?;
        let result = fetch_part(
            &handle,
            manifest_url,
            entry,
            part,
            pause,
            progress,
            file_done,
        )
        .await;
        let outcome = match result {
            Ok(true) => {
                let sha = storage::sha256(&handle, &mut whole);
                let size = storage::size(&handle);
                handle.close();
                let (sha, size) = (sha?, size?);
                if part.size > 0 && size != part.size {
                    return Ok(FileOutcome::Corrupt(format!(
                        "{name} is {size} bytes, the manifest says {}",
                        part.size
                    )));
                }
                if let Some(want) = &part.sha256 {
                    if !want.eq_ignore_ascii_case(&sha) {
                        return Ok(FileOutcome::Corrupt(format!(
                            "{name} failed its checksum (sha256 {sha}, expected {want})"
                        )));
                    }
                }
                file_done += size;
                None
            }
            Ok(false) => {
                handle.close();
                Some(FileOutcome::Paused)
            }
            Err(e) => {
                handle.close();
                return Err(e);
            }
        };
        if let Some(o) = outcome {
            return Ok(o);
        }
    }
    use sha2::Digest;
    let sha = jnana::bundle::hex(&whole.finalize());
    if let Some(want) = &entry.sha256 {
        if !want.eq_ignore_ascii_case(&sha) {
            return Ok(FileOutcome::Corrupt(format!(
                "{} failed its checksum (sha256 {sha}, expected {want})",
                entry.name
            )));
        }
    }
    Ok(FileOutcome::Verified(sha))
}

/// Fills one stored part from the network, resuming at its current size. `Ok(false)` = paused.
async fn fetch_part(
    handle: &web_sys::FileSystemSyncAccessHandle,
    manifest_url: &str,
    entry: &FileEntry,
    part: &Part,
    pause: &PauseFlag,
    progress: &mut Progress,
    before: u64,
) -> Result<bool, String> {
    let mut have = storage::size(handle)?;
    if part.size > 0 && have > part.size {
        handle
            .truncate_with_f64(0.0)
            .map_err(|e| storage::describe(&e))?;
        have = 0;
    }
    if part.size > 0 && have == part.size {
        return Ok(true);
    }
    let urls: Vec<String> = part.urls.iter().map(|u| resolve(u, manifest_url)).collect();
    let mut last_error = String::new();
    for attempt in 0..ATTEMPTS {
        let url = &urls[attempt % urls.len().max(1)];
        if pause.is_raised() {
            return Ok(false);
        }
        let response = match fetch(url, have).await {
            Ok(r) => r,
            Err(e) => {
                last_error = e;
                continue;
            }
        };
        match response.status() {
            206 => {}
            200 => {
                // The server ignored the range: start over.
                handle
                    .truncate_with_f64(0.0)
                    .map_err(|e| storage::describe(&e))?;
                have = 0;
            }
            416 if part.size == 0 || have >= part.size => return Ok(true),
            status => return Err(format!("{url}: HTTP {status}")),
        }
        let Some(body) = response.body() else {
            return Err(format!("{url}: empty response"));
        };
        let reader: web_sys::ReadableStreamDefaultReader = body.get_reader().unchecked_into();
        let size = (part.size > 0).then_some(part.size);
        loop {
            if pause.is_raised() {
                let _ = reader.cancel();
                handle.flush().map_err(|e| storage::describe(&e))?;
                progress.report(&entry.name, before + have, entry.size, true);
                return Ok(false);
            }
            let chunk = match JsFuture::from(reader.read()).await {
                Ok(c) => c,
                Err(e) => {
                    last_error = storage::describe(&e);
                    post(&FromWorker::DownloadNotice {
                        message: format!(
                            "the connection dropped while fetching {} at {:.1} MB; resuming",
                            entry.name,
                            have as f64 / 1e6
                        ),
                    });
                    break;
                }
            };
            if Reflect::get(&chunk, &"done".into())
                .ok()
                .and_then(|d| d.as_bool())
                .unwrap_or(true)
            {
                handle.flush().map_err(|e| storage::describe(&e))?;
                if size.is_none_or(|s| have >= s) {
                    progress.report(&entry.name, before + have, entry.size, true);
                    return Ok(true);
                }
                last_error = format!("{url} ended at {have} of {} bytes", part.size);
                break;
            }
            let bytes: Uint8Array = Reflect::get(&chunk, &"value".into())
                .map_err(|e| storage::describe(&e))?
                .unchecked_into();
            storage::write_at(handle, &bytes, have)?;
            have += bytes.length() as u64;
            if size.is_some_and(|s| have > s) {
                return Err(format!(
                    "{url} sent more than the {} bytes the manifest says",
                    part.size
                ));
            }
            progress.report(&entry.name, before + have, entry.size, false);
        }
    }
    Err(format!(
        "could not download {} after {ATTEMPTS} attempts: {last_error}",
        entry.name
    ))
}

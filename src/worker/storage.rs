//! Browser storage: the origin private file system (OPFS). Chosen over the Cache API because a
//! dedicated worker gets synchronous, seekable access handles: large files are written chunk by
//! chunk as they download (resumable at any byte) and read back tensor by tensor while models
//! load, so a multi-gigabyte file never becomes one `ArrayBuffer`.

use super::scope;
use crate::protocol::StorageInfo;
use js_sys::{Promise, Reflect, Uint8Array};
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    FileSystemDirectoryHandle, FileSystemFileHandle, FileSystemGetDirectoryOptions,
    FileSystemGetFileOptions, FileSystemReadWriteOptions, FileSystemRemoveOptions,
    FileSystemSyncAccessHandle,
};

/// A message for a storage failure, naming quota problems as such.
pub fn describe(e: &JsValue) -> String {
    let name = Reflect::get(e, &"name".into())
        .ok()
        .and_then(|n| n.as_string())
        .unwrap_or_default();
    let message = crate::bridge::js_message(e);
    if name == "QuotaExceededError" {
        "the browser's storage quota is exceeded: free some space (or delete a model) and try again"
            .into()
    } else if name.is_empty() {
        message
    } else {
        format!("{name}: {message}")
    }
}

async fn wait(p: Promise) -> Result<JsValue, String> {
    JsFuture::from(p).await.map_err(|e| describe(&e))
}

pub async fn root() -> Result<FileSystemDirectoryHandle, String> {
    let storage = scope().navigator().storage();
    Ok(wait(storage.get_directory()).await?.unchecked_into())
}

pub async fn estimate() -> StorageInfo {
    let Ok(promise) = scope().navigator().storage().estimate() else {
        return StorageInfo::default();
    };
    let Ok(value) = JsFuture::from(promise).await else {
        return StorageInfo::default();
    };
    let get = |k: &str| {
        Reflect::get(&value, &k.into())
            .ok()
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0) as u64
    };
    StorageInfo {
        used: get("usage"),
        quota: get("quota"),
    }
}

/// Asks the browser not to evict the models under storage pressure.
pub async fn persist() {
    if let Ok(p) = scope().navigator().storage().persist() {
        let _ = JsFuture::from(p).await;
    }
}

pub async fn subdir(
    parent: &FileSystemDirectoryHandle,
    name: &str,
    create: bool,
) -> Result<FileSystemDirectoryHandle, String> {
    let options = FileSystemGetDirectoryOptions::new();
    options.set_create(create);
    Ok(
        wait(parent.get_directory_handle_with_options(name, &options))
            .await?
            .unchecked_into(),
    )
}

pub async fn file(
    dir: &FileSystemDirectoryHandle,
    name: &str,
    create: bool,
) -> Result<FileSystemFileHandle, String> {
    let options = FileSystemGetFileOptions::new();
    options.set_create(create);
    Ok(wait(dir.get_file_handle_with_options(name, &options))
        .await?
        .unchecked_into())
}

pub async fn remove(dir: &FileSystemDirectoryHandle, name: &str) {
    let options = FileSystemRemoveOptions::new();
    options.set_recursive(true);
    let _ = JsFuture::from(dir.remove_entry_with_options(name, &options)).await;
}

pub async fn sync_handle(
    file: &FileSystemFileHandle,
) -> Result<FileSystemSyncAccessHandle, String> {
    Ok(wait(file.create_sync_access_handle())
        .await?
        .unchecked_into())
}

pub fn size(handle: &FileSystemSyncAccessHandle) -> Result<u64, String> {
    handle
        .get_size()
        .map(|s| s as u64)
        .map_err(|e| describe(&e))
}

pub fn write_at(
    handle: &FileSystemSyncAccessHandle,
    bytes: &Uint8Array,
    at: u64,
) -> Result<(), String> {
    let options = FileSystemReadWriteOptions::new();
    options.set_at(at as f64);
    let written = handle
        .write_with_js_u8_array_and_options(bytes, &options)
        .map_err(|e| describe(&e))?;
    if written as u32 != bytes.length() {
        return Err(format!(
            "storage wrote {written} of {} bytes (quota exceeded?)",
            bytes.length()
        ));
    }
    Ok(())
}

/// A small file's whole content (manifests, state).
pub async fn read_small(dir: &FileSystemDirectoryHandle, name: &str) -> Option<Vec<u8>> {
    let handle = sync_handle(&file(dir, name, false).await.ok()?)
        .await
        .ok()?;
    let mut reader = OpfsReader::new(handle).ok()?;
    let mut out = Vec::new();
    reader.read_to_end(&mut out).ok()?;
    Some(out)
}

pub async fn write_small(
    dir: &FileSystemDirectoryHandle,
    name: &str,
    bytes: &[u8],
) -> Result<(), String> {
    let handle = sync_handle(&file(dir, name, true).await?).await?;
    handle.truncate_with_f64(0.0).map_err(|e| describe(&e))?;
    write_at(&handle, &Uint8Array::from(bytes), 0)?;
    handle.flush().map_err(|e| describe(&e))?;
    handle.close();
    Ok(())
}

/// sha256 of a stored file, read back in 4 MB pieces.
/// The hash of a stored part, also fed to `whole` (the hash of the file the part belongs to).
pub fn sha256(handle: &FileSystemSyncAccessHandle, whole: &mut Sha256) -> Result<String, String> {
    let len = size(handle)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut at = 0u64;
    while at < len {
        let n = ((len - at) as usize).min(buf.len());
        read_at(handle, &mut buf[..n], at)?;
        hasher.update(&buf[..n]);
        whole.update(&buf[..n]);
        at += n as u64;
    }
    Ok(jnana::bundle::hex(&hasher.finalize()))
}

fn read_at(handle: &FileSystemSyncAccessHandle, buf: &mut [u8], at: u64) -> Result<usize, String> {
    let options = FileSystemReadWriteOptions::new();
    options.set_at(at as f64);
    handle
        .read_with_u8_array_and_options(buf, &options)
        .map(|n| n as usize)
        .map_err(|e| describe(&e))
}

/// A stored file as `Read + Seek`, for the model loaders. Closes its handle when dropped.
pub struct OpfsReader {
    handle: FileSystemSyncAccessHandle,
    pos: u64,
    len: u64,
}

// SAFETY: this crate is built for wasm32-unknown-unknown without threads (no atomics target
// feature), so there is no other thread a value could be sent to; the model loaders only ask
// for `Send` because the same code runs multi-threaded natively.
unsafe impl Send for OpfsReader {}

impl OpfsReader {
    pub fn new(handle: FileSystemSyncAccessHandle) -> Result<Self, String> {
        let len = size(&handle)?;
        Ok(Self {
            handle,
            pos: 0,
            len,
        })
    }
}

impl Drop for OpfsReader {
    fn drop(&mut self) {
        self.handle.close();
    }
}

impl Read for OpfsReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.len {
            return Ok(0);
        }
        let n = buf.len().min((self.len - self.pos) as usize);
        let read = read_at(&self.handle, &mut buf[..n], self.pos).map_err(std::io::Error::other)?;
        self.pos += read as u64;
        Ok(read)
    }
}

impl Seek for OpfsReader {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = jnana::bundle::seek_position(self.pos, self.len, to)?;
        Ok(self.pos)
    }
}

//! Pictures in (PNG, JPEG with EXIF orientation, WebP, GIF's first frame, BMP) and CLIP's
//! `CLIPImageProcessor` recipe out: RGB → shortest edge to 224 (bicubic) → centre crop 224 →
//! x/255 → (x - mean) / std, as a `[1, 3, 224, 224]` tensor.

use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use image::{DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage};
use serde::{Deserialize, Serialize};
use std::io::Cursor;

mod pil_bicubic;

/// Largest side accepted before decoding (a 40 000 px header is refused without allocating).
pub const MAX_SIDE: u32 = 12_000;
/// Most memory the decoder may allocate.
pub const MAX_DECODE_BYTES: u64 = 400 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreprocessConfig {
    pub shortest_edge: u32,
    pub crop_size: u32,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    pub rescale_factor: f64,
}

impl Default for PreprocessConfig {
    /// openai/clip-vit-base-patch32's processor settings.
    fn default() -> Self {
        Self {
            shortest_edge: 224,
            crop_size: 224,
            image_mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
            image_std: [0.268_629_54, 0.261_302_6, 0.275_777_1],
            rescale_factor: 1.0 / 255.0,
        }
    }
}

impl PreprocessConfig {
    /// Reads a `preprocessor_config.json` (or the `preprocessor` block of a fixture config).
    pub fn from_hf_value(v: &serde_json::Value) -> Self {
        let v = v.get("preprocessor").unwrap_or(v);
        let d = Self::default();
        let num = |key: &str, sub: &str| -> Option<u32> {
            let x = v.get(key)?;
            x.as_u64()
                .or_else(|| x.get(sub).and_then(|y| y.as_u64()))
                .map(|y| y as u32)
        };
        let triple = |key: &str, default: [f32; 3]| -> [f32; 3] {
            v.get(key)
                .and_then(|x| serde_json::from_value::<[f32; 3]>(x.clone()).ok())
                .unwrap_or(default)
        };
        Self {
            shortest_edge: num("size", "shortest_edge").unwrap_or(d.shortest_edge),
            crop_size: num("crop_size", "height").unwrap_or(d.crop_size),
            image_mean: triple("image_mean", d.image_mean),
            image_std: triple("image_std", d.image_std),
            rescale_factor: v
                .get("rescale_factor")
                .and_then(|x| x.as_f64())
                .unwrap_or(d.rescale_factor),
        }
    }
}

/// Decodes any supported picture into upright RGB. Refuses oversized pictures from their header.
pub fn decode_image(bytes: &[u8]) -> Result<RgbImage> {
    if bytes.is_empty() {
        return Err(Error::Image("the file is empty".into()));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::Image(format!("cannot read the picture: {e}")))?;
    if reader.format().is_none() {
        return Err(Error::Image(
            "not a picture this app reads (PNG, JPEG, WebP, GIF or BMP)".into(),
        ));
    }
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| Error::Image(format!("cannot decode the picture: {e}")))?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(Error::Image(format!("the picture is {w}x{h} pixels")));
    }
    if w > MAX_SIDE || h > MAX_SIDE {
        return Err(Error::Image(format!(
            "the picture is {w}x{h} pixels; the largest accepted side is {MAX_SIDE}"
        )));
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    decoder
        .set_limits(limits)
        .map_err(|e| Error::Image(format!("the picture is too large to decode: {e}")))?;
    let orientation = decoder.orientation().ok();
    let mut img = DynamicImage::from_decoder(decoder)
        .map_err(|e| Error::Image(format!("cannot decode the picture: {e}")))?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(img.to_rgb8())
}

/// The size HF resizes to: shortest edge = `edge`, the other side `int(edge * long / short)`.
pub fn resized_size(width: u32, height: u32, edge: u32) -> (u32, u32) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    let new_long = (edge as u64 * long as u64 / short as u64) as u32;
    if width <= height {
        (edge, new_long)
    } else {
        (new_long, edge)
    }
}

/// Shortest-edge bicubic resize then centre crop, as 8-bit RGB (what the processor normalises).
pub fn resize_and_crop(img: &RgbImage, cfg: &PreprocessConfig) -> Result<RgbImage> {
    if img.width() == 0 || img.height() == 0 || cfg.shortest_edge == 0 || cfg.crop_size == 0 {
        return Err(Error::Image(format!(
            "cannot resize a {}x{} picture to {} pixels",
            img.width(),
            img.height(),
            cfg.shortest_edge
        )));
    }
    let (w, h) = resized_size(img.width(), img.height(), cfg.shortest_edge);
    // HF pads when the crop is larger than the picture; with shortest_edge >= crop_size that
    // never happens, so a plain crop is enough.
    let (cw, ch) = (cfg.crop_size.min(w), cfg.crop_size.min(h));
    let top = (h - ch) / 2;
    let left = (w - cw) / 2;
    Ok(pil_bicubic::resize_crop(img, (w, h), (left, top, cw, ch)))
}

/// `[1, 3, crop, crop]` normalised pixel values.
pub fn pixel_values(img: &RgbImage, cfg: &PreprocessConfig, device: &Device) -> Result<Tensor> {
    let cropped = resize_and_crop(img, cfg)?;
    let (w, h) = (cropped.width() as usize, cropped.height() as usize);
    let mut data = vec![0f32; 3 * w * h];
    for (x, y, px) in cropped.enumerate_pixels() {
        for c in 0..3 {
            let v = px.0[c] as f64 * cfg.rescale_factor;
            data[c * w * h + y as usize * w + x as usize] =
                (v as f32 - cfg.image_mean[c]) / cfg.image_std[c];
        }
    }
    Ok(Tensor::from_vec(data, (1, 3, h, w), device)?)
}

/// Decode + preprocess in one step.
pub fn image_to_pixel_values(
    bytes: &[u8],
    cfg: &PreprocessConfig,
    device: &Device,
) -> Result<Tensor> {
    pixel_values(&decode_image(bytes)?, cfg, device)
}

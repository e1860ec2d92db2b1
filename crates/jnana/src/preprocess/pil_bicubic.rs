//! Pillow's bicubic resampling (`Image.resize(size, BICUBIC)`), reproduced so pictures reach CLIP
//! exactly as they did when the seed's projector was trained (transformers' PIL-backed
//! `CLIPImageProcessor`). No crate does this: `image`'s Catmull-Rom filter runs the passes in the
//! other order in float and lands up to 3 levels away; Pillow filters horizontally first, with
//! 22-bit fixed-point weights, and rounds to 8 bits between the passes.

use image::RgbImage;

const PRECISION_BITS: u32 = 32 - 8 - 2;
/// Bicubic's support radius (Keys' cubic with a = -0.5).
const SUPPORT: f64 = 2.0;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// For each output index: the first input index and its fixed-point weights.
struct Coefficients {
    taps: Vec<(usize, Vec<i32>)>,
}

impl Coefficients {
    fn new(in_size: usize, out_size: usize) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filter_scale = scale.max(1.0);
        let support = SUPPORT * filter_scale;
        let taps = (0..out_size)
            .map(|xx| {
                let center = (xx as f64 + 0.5) * scale;
                let xmin = ((center - support + 0.5) as i64).max(0) as usize;
                let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
                let weights: Vec<f64> = (xmin..xmax)
                    .map(|x| bicubic((x as f64 - center + 0.5) / filter_scale))
                    .collect();
                let total: f64 = weights.iter().sum();
                let fixed = weights
                    .iter()
                    .map(|&w| {
                        let w = if total != 0.0 { w / total } else { w };
                        let scaled = w * (1u32 << PRECISION_BITS) as f64;
                        // C's (int) truncates toward zero after the half offset.
                        (if w < 0.0 { scaled - 0.5 } else { scaled + 0.5 }) as i32
                    })
                    .collect();
                (xmin, fixed)
            })
            .collect();
        Self { taps }
    }
}

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// `src` (`width`×`height`×3, row-major) resampled along x into `out_width` columns.
fn horizontal(src: &[u8], width: usize, height: usize, out_width: usize) -> Vec<u8> {
    let coeffs = Coefficients::new(width, out_width);
    let mut out = vec![0u8; out_width * height * 3];
    for y in 0..height {
        let row = &src[y * width * 3..(y + 1) * width * 3];
        for (xx, (xmin, weights)) in coeffs.taps.iter().enumerate() {
            for c in 0..3 {
                let mut acc: i64 = 1 << (PRECISION_BITS - 1);
                for (i, &w) in weights.iter().enumerate() {
                    acc += row[(xmin + i) * 3 + c] as i64 * w as i64;
                }
                out[(y * out_width + xx) * 3 + c] = clip8(acc);
            }
        }
    }
    out
}

fn vertical(src: &[u8], width: usize, height: usize, out_height: usize) -> Vec<u8> {
    let coeffs = Coefficients::new(height, out_height);
    let mut out = vec![0u8; width * out_height * 3];
    for (yy, (ymin, weights)) in coeffs.taps.iter().enumerate() {
        for x in 0..width * 3 {
            let mut acc: i64 = 1 << (PRECISION_BITS - 1);
            for (i, &w) in weights.iter().enumerate() {
                acc += src[(ymin + i) * width * 3 + x] as i64 * w as i64;
            }
            out[yy * width * 3 + x] = clip8(acc);
        }
    }
    out
}

/// Resizes like Pillow: horizontal pass, 8-bit intermediate, vertical pass (each only when
/// that dimension changes).
pub fn resize(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (ow, oh) = (width as usize, height as usize);
    let mut pixels = img.as_raw().clone();
    if ow != w {
        pixels = horizontal(&pixels, w, h, ow);
    }
    if oh != h {
        pixels = vertical(&pixels, ow, h, oh);
    }
    RgbImage::from_raw(width, height, pixels).expect("buffer sized for the output")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (inp, out) in [(480, 224), (224, 480), (311, 224), (7, 3)] {
            for (_, w) in Coefficients::new(inp, out).taps {
                let sum: i64 = w.iter().map(|&v| v as i64).sum();
                assert!(
                    (sum - (1 << PRECISION_BITS)).abs() <= w.len() as i64,
                    "{inp}->{out}: {sum}"
                );
            }
        }
    }

    #[test]
    fn a_flat_picture_stays_flat() {
        let img = RgbImage::from_pixel(37, 23, image::Rgb([10, 128, 250]));
        let out = resize(&img, 224, 139);
        assert!(out.pixels().all(|p| p.0 == [10, 128, 250]));
    }
}

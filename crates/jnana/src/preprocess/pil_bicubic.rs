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

/// For each output index of a window: the first input index and its fixed-point weights.
struct Coefficients {
    taps: Vec<(usize, Vec<i32>)>,
}

impl Coefficients {
    /// Weights for output indices `window` of a resize from `in_size` to `out_size`.
    fn new(in_size: usize, out_size: usize, window: std::ops::Range<usize>) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filter_scale = scale.max(1.0);
        let support = SUPPORT * filter_scale;
        let taps = window
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

    /// The identity (a dimension that keeps its size: Pillow skips that pass).
    fn identity(window: std::ops::Range<usize>) -> Self {
        Self {
            taps: window.map(|x| (x, vec![1 << PRECISION_BITS])).collect(),
        }
    }

    fn for_axis(in_size: usize, out_size: usize, window: std::ops::Range<usize>) -> Self {
        if in_size == out_size {
            Self::identity(window)
        } else {
            Self::new(in_size, out_size, window)
        }
    }

    /// The input indices any tap reads.
    fn input_span(&self) -> std::ops::Range<usize> {
        let first = self.taps.iter().map(|(m, _)| *m).min().unwrap_or(0);
        let end = self
            .taps
            .iter()
            .map(|(m, w)| m + w.len())
            .max()
            .unwrap_or(0);
        first..end
    }
}

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

fn dot(taps: &(usize, Vec<i32>), sample: impl Fn(usize) -> u8) -> u8 {
    let (start, weights) = taps;
    let mut acc: i64 = 1 << (PRECISION_BITS - 1);
    for (i, &w) in weights.iter().enumerate() {
        acc += sample(start + i) as i64 * w as i64;
    }
    clip8(acc)
}

/// Pillow's `img.resize((width, height), BICUBIC).crop((left, top, left + crop_w, top + crop_h))`,
/// computing only the cropped pixels (a very long, thin picture would otherwise resize to
/// gigabytes). Horizontal pass first, 8-bit intermediate, then the vertical pass.
pub fn resize_crop(
    img: &RgbImage,
    (width, height): (u32, u32),
    (left, top, crop_w, crop_h): (u32, u32, u32, u32),
) -> RgbImage {
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    let (left, top, cw, ch) = (
        left as usize,
        top as usize,
        crop_w as usize,
        crop_h as usize,
    );
    let xs = Coefficients::for_axis(in_w, width as usize, left..left + cw);
    let ys = Coefficients::for_axis(in_h, height as usize, top..top + ch);
    let rows = ys.input_span();
    let src = img.as_raw();
    // Horizontal pass over the input rows the vertical pass reads.
    let mut mid = vec![0u8; rows.len() * cw * 3];
    for (r, y) in rows.clone().enumerate() {
        let row = &src[y * in_w * 3..(y + 1) * in_w * 3];
        for (x, taps) in xs.taps.iter().enumerate() {
            for c in 0..3 {
                mid[(r * cw + x) * 3 + c] = dot(taps, |i| row[i * 3 + c]);
            }
        }
    }
    let mut out = vec![0u8; cw * ch * 3];
    for (y, taps) in ys.taps.iter().enumerate() {
        for x in 0..cw * 3 {
            out[y * cw * 3 + x] = dot(taps, |i| mid[(i - rows.start) * cw * 3 + x]);
        }
    }
    RgbImage::from_raw(crop_w, crop_h, out).expect("buffer sized for the output")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (inp, out) in [(480, 224), (224, 480), (311, 224), (7, 3)] {
            for (_, w) in Coefficients::new(inp, out, 0..out).taps {
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
        let out = resize_crop(&img, (224, 139), (0, 0, 224, 139));
        assert!(out.pixels().all(|p| p.0 == [10, 128, 250]));
    }

    #[test]
    fn cropping_computes_the_same_pixels_as_resizing_everything() {
        let img = RgbImage::from_fn(97, 61, |x, y| {
            image::Rgb([
                (x * 7 % 256) as u8,
                (y * 11 % 256) as u8,
                ((x * y) % 256) as u8,
            ])
        });
        let full = resize_crop(&img, (150, 120), (0, 0, 150, 120));
        let part = resize_crop(&img, (150, 120), (30, 40, 64, 50));
        for (x, y, p) in part.enumerate_pixels() {
            assert_eq!(p, full.get_pixel(x + 30, y + 40));
        }
    }
}

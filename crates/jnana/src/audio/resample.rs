//! Streaming sample-rate conversion (rubato's FFT resampler: a fixed ratio, band-limited).

use crate::error::{Error, Result};
use rubato::{FftFixedIn, Resampler as _};

/// Converts a mono stream from one rate to another, chunk by chunk.
pub struct Resampler {
    inner: Option<FftFixedIn<f32>>,
    pending: Vec<f32>,
    /// Output samples still to drop: the filter's delay.
    skip: usize,
    consumed: u64,
    produced: u64,
    from: u32,
    to: u32,
}

const CHUNK: usize = 1024;

impl Resampler {
    pub fn new(from: u32, to: u32) -> Result<Self> {
        let inner = if from == to {
            None
        } else {
            Some(
                FftFixedIn::<f32>::new(from as usize, to as usize, CHUNK, 2, 1).map_err(|e| {
                    Error::Input(format!("cannot resample {from} Hz to {to} Hz: {e}"))
                })?,
            )
        };
        let skip = inner.as_ref().map_or(0, |r| r.output_delay());
        Ok(Self {
            inner,
            pending: Vec::new(),
            skip,
            consumed: 0,
            produced: 0,
            from,
            to,
        })
    }

    fn emit(&mut self, data: &[f32], out: &mut Vec<f32>, limit: Option<u64>) {
        let skipped = self.skip.min(data.len());
        self.skip -= skipped;
        let mut data = &data[skipped..];
        if let Some(limit) = limit {
            let room = limit.saturating_sub(self.produced) as usize;
            data = &data[..data.len().min(room)];
        }
        self.produced += data.len() as u64;
        out.extend_from_slice(data);
    }

    /// Converts `samples`, appending what is ready to `out`.
    pub fn push(&mut self, samples: &[f32], out: &mut Vec<f32>) -> Result<()> {
        self.consumed += samples.len() as u64;
        let Some(inner) = self.inner.as_mut() else {
            self.produced += samples.len() as u64;
            out.extend_from_slice(samples);
            return Ok(());
        };
        self.pending.extend_from_slice(samples);
        let mut start = 0;
        let mut ready = Vec::new();
        while self.pending.len() - start >= inner.input_frames_next() {
            let n = inner.input_frames_next();
            let chunk = &self.pending[start..start + n];
            let res = inner
                .process(&[chunk], None)
                .map_err(|e| Error::Input(format!("resampling failed: {e}")))?;
            ready.extend_from_slice(&res[0]);
            start += n;
        }
        self.pending.drain(..start);
        self.emit(&ready, out, None);
        Ok(())
    }

    /// Flushes the end of the stream; the total output is `input * to / from` samples.
    pub fn finish(&mut self, out: &mut Vec<f32>) -> Result<()> {
        let expected = (self.consumed * self.to as u64).div_ceil(self.from as u64);
        let Some(inner) = self.inner.as_mut() else {
            return Ok(());
        };
        let mut ready = Vec::new();
        if !self.pending.is_empty() {
            let res = inner
                .process_partial(Some(&[self.pending.as_slice()]), None)
                .map_err(|e| Error::Input(format!("resampling failed: {e}")))?;
            ready.extend_from_slice(&res[0]);
            self.pending.clear();
        }
        // Push silence through until the delayed tail has come out.
        let mut guard = 0;
        while self.produced + (ready.len().saturating_sub(self.skip) as u64) < expected
            && guard < 64
        {
            let res = inner
                .process_partial::<&[f32]>(None, None)
                .map_err(|e| Error::Input(format!("resampling failed: {e}")))?;
            ready.extend_from_slice(&res[0]);
            guard += 1;
        }
        self.emit(&ready, out, Some(expected));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f32, rate: u32, seconds: f32) -> Vec<f32> {
        let n = (rate as f32 * seconds) as usize;
        (0..n)
            .map(|i| (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin() * 0.5)
            .collect()
    }

    #[test]
    fn a_tone_keeps_its_pitch_length_and_phase() {
        for rate in [48_000, 22_050, 44_100, 8_000, 32_000, 24_000] {
            let input = tone(440.0, rate, 1.3);
            let mut r = Resampler::new(rate, 16_000).unwrap();
            let mut out = Vec::new();
            for chunk in input.chunks(777) {
                r.push(chunk, &mut out).unwrap();
            }
            r.finish(&mut out).unwrap();
            let want = tone(440.0, 16_000, 1.3);
            assert_eq!(
                out.len(),
                (input.len() as u64 * 16_000).div_ceil(rate as u64) as usize,
                "{rate}"
            );
            // Away from the edges: same loudness, same pitch, and within a fraction of a
            // sample of the ideal tone (the filter delay is rounded to whole output samples).
            let (o, w) = (&out[800..out.len() - 800], &want[800..out.len() - 800]);
            let rms = |v: &[f32]| (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
            assert!(
                (rms(o) / rms(w) - 1.0).abs() < 0.01,
                "{rate} Hz: loudness changed"
            );
            let crossings =
                |v: &[f32]| v.windows(2).filter(|p| p[0] < 0.0 && p[1] >= 0.0).count() as i64;
            assert!(
                (crossings(o) - crossings(w)).abs() <= 1,
                "{rate} Hz: pitch changed"
            );
            let err = o
                .iter()
                .zip(w)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err < 0.05, "{rate} Hz: max error {err}");
        }
    }

    #[test]
    fn equal_rates_pass_through() {
        let input = tone(100.0, 16_000, 0.1);
        let mut r = Resampler::new(16_000, 16_000).unwrap();
        let mut out = Vec::new();
        r.push(&input, &mut out).unwrap();
        r.finish(&mut out).unwrap();
        assert_eq!(out, input);
    }
}

//! Whisper's log-mel front end, as `WhisperFeatureExtractor` / openai-whisper compute it: pad or
//! cut to 30 s, STFT (400-point periodic Hann, hop 160, centred with reflection), power, Slaney
//! mel filter bank, log10, clamp to 8 below the maximum, (x + 4) / 4. Computed in float64.

use realfft::RealFftPlanner;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq)]
pub struct MelConfig {
    pub n_mels: usize,
    pub n_fft: usize,
    pub hop_length: usize,
    pub sample_rate: usize,
    /// Seconds per window (30): shorter audio is padded with zeros.
    pub chunk_length: usize,
}

impl MelConfig {
    pub fn whisper(n_mels: usize) -> Self {
        Self {
            n_mels,
            n_fft: 400,
            hop_length: 160,
            sample_rate: 16_000,
            chunk_length: 30,
        }
    }

    pub fn n_samples(&self) -> usize {
        self.chunk_length * self.sample_rate
    }

    pub fn n_frames(&self) -> usize {
        self.n_samples() / self.hop_length
    }
}

fn hz_to_mel(hz: f64) -> f64 {
    // Slaney: linear below 1 kHz, logarithmic above.
    let (f_sp, min_log_hz, min_log_mel) = (200.0 / 3.0, 1000.0, 15.0);
    let logstep = 6.4f64.ln() / 27.0;
    if hz >= min_log_hz {
        min_log_mel + (hz / min_log_hz).ln() / logstep
    } else {
        hz / f_sp
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    let (f_sp, min_log_hz, min_log_mel) = (200.0 / 3.0, 1000.0, 15.0);
    let logstep = 6.4f64.ln() / 27.0;
    if mel >= min_log_mel {
        min_log_hz * (logstep * (mel - min_log_mel)).exp()
    } else {
        f_sp * mel
    }
}

/// The Slaney-normalised triangular filter bank, `[n_mels][n_fft / 2 + 1]`, row-major.
pub fn mel_filters(n_mels: usize, n_fft: usize, sample_rate: usize) -> Vec<f64> {
    let n_freqs = n_fft / 2 + 1;
    let nyquist = sample_rate as f64 / 2.0;
    let fft_freqs: Vec<f64> = (0..n_freqs)
        .map(|i| nyquist * i as f64 / (n_freqs - 1) as f64)
        .collect();
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(nyquist));
    let points: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut filters = vec![0f64; n_mels * n_freqs];
    for m in 0..n_mels {
        let (left, center, right) = (points[m], points[m + 1], points[m + 2]);
        let norm = 2.0 / (right - left);
        for (f, &freq) in fft_freqs.iter().enumerate() {
            let down = (freq - left) / (center - left);
            let up = (right - freq) / (right - center);
            filters[m * n_freqs + f] = down.min(up).max(0.0) * norm;
        }
    }
    filters
}

/// Computes log-mel features for 30-second windows.
pub struct LogMel {
    cfg: MelConfig,
    filters: Vec<f64>,
    window: Vec<f64>,
    fft: Arc<dyn realfft::RealToComplex<f64>>,
}

impl LogMel {
    pub fn new(cfg: MelConfig) -> Self {
        let n = cfg.n_fft;
        let window = (0..n)
            .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos())
            .collect();
        Self {
            filters: mel_filters(cfg.n_mels, cfg.n_fft, cfg.sample_rate),
            fft: RealFftPlanner::<f64>::new().plan_fft_forward(n),
            window,
            cfg,
        }
    }

    pub fn config(&self) -> &MelConfig {
        &self.cfg
    }

    /// `[n_mels][n_frames]` features of up to 30 s of 16 kHz audio (zero-padded to 30 s).
    pub fn compute(&self, samples: &[f32]) -> Vec<f32> {
        let (n_fft, hop) = (self.cfg.n_fft, self.cfg.hop_length);
        let n_samples = self.cfg.n_samples();
        let n_frames = self.cfg.n_frames();
        let n_freqs = n_fft / 2 + 1;
        let half = n_fft / 2;
        let mut audio = vec![0f64; n_samples];
        for (a, &s) in audio.iter_mut().zip(samples) {
            *a = s as f64;
        }
        // Centre the frames: reflect `half` samples at both ends.
        let len = n_samples + 2 * half;
        let padded = |i: usize| -> f64 {
            let j = i as isize - half as isize;
            let n = n_samples as isize;
            let k = if j < 0 {
                -j
            } else if j >= n {
                2 * (n - 1) - j
            } else {
                j
            };
            audio[k as usize]
        };
        debug_assert!(len >= n_fft);
        let mut frame = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut power = vec![0f64; n_freqs * n_frames];
        for t in 0..n_frames {
            for (i, x) in frame.iter_mut().enumerate() {
                *x = padded(t * hop + i) * self.window[i];
            }
            self.fft
                .process(&mut frame, &mut spectrum)
                .expect("buffers sized by the planner");
            for (f, c) in spectrum.iter().enumerate() {
                power[f * n_frames + t] = c.norm_sqr();
            }
        }
        let n_mels = self.cfg.n_mels;
        let mut mel = vec![0f64; n_mels * n_frames];
        for m in 0..n_mels {
            let row = &self.filters[m * n_freqs..(m + 1) * n_freqs];
            let out = &mut mel[m * n_frames..(m + 1) * n_frames];
            for (f, &w) in row.iter().enumerate() {
                if w == 0.0 {
                    continue;
                }
                let p = &power[f * n_frames..(f + 1) * n_frames];
                for (o, &v) in out.iter_mut().zip(p) {
                    *o += w * v;
                }
            }
        }
        let mut max = f64::NEG_INFINITY;
        for v in mel.iter_mut() {
            *v = v.max(1e-10).log10();
            max = max.max(*v);
        }
        mel.iter()
            .map(|&v| ((v.max(max - 8.0) + 4.0) / 4.0) as f32)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slaney_scale_round_trips() {
        for hz in [0.0, 300.0, 999.0, 1000.0, 4000.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-9);
        }
    }
}

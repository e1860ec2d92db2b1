//! Audio in: files decoded by `symphonia` (WAV 16/24-bit/float, MP3, OGG/Vorbis, FLAC, M4A/AAC),
//! or PCM handed over by the browser's WebAudio; downmixed to mono and resampled to 16 kHz with
//! `rubato`, streamed in chunks so a two-hour recording never sits in memory whole.

mod decode;
pub mod mel;
mod resample;

pub use decode::AudioStream;
pub use resample::Resampler;
/// What [`AudioStream::open`] reads from: any `Read + Seek + Send + Sync` that says whether it can
/// seek and how long it is.
pub use symphonia::core::io::MediaSource;

use crate::error::{Error, Result};

/// Whisper's sample rate.
pub const SAMPLE_RATE: u32 = 16_000;

/// Mono PCM at 16 kHz from interleaved PCM at any rate (what the browser hands over after
/// WebAudio decoding).
pub fn pcm_to_16k_mono(interleaved: &[f32], channels: usize, sample_rate: u32) -> Result<Vec<f32>> {
    check_format(channels, sample_rate)?;
    let mono = downmix(interleaved, channels);
    check_samples(&mono)?;
    let mut resampler = Resampler::new(sample_rate, SAMPLE_RATE)?;
    let mut out = Vec::with_capacity(mono.len() * SAMPLE_RATE as usize / sample_rate as usize + 1);
    resampler.push(&mono, &mut out)?;
    resampler.finish(&mut out)?;
    Ok(out)
}

pub(crate) fn check_format(channels: usize, sample_rate: u32) -> Result<()> {
    if channels == 0 {
        return Err(Error::Input("the audio has no channels".into()));
    }
    if !(1_000..=768_000).contains(&sample_rate) {
        return Err(Error::Input(format!(
            "a sample rate of {sample_rate} Hz is not audio this app can use"
        )));
    }
    Ok(())
}

/// Refuses samples that are not numbers (a broken recorder or decoder).
pub(crate) fn check_samples(samples: &[f32]) -> Result<()> {
    let bad = samples.iter().filter(|s| !s.is_finite()).count();
    if bad > 0 {
        return Err(Error::Input(format!(
            "the audio holds {bad} samples that are not numbers (NaN or infinite)"
        )));
    }
    Ok(())
}

/// Averages interleaved channels into one.
pub(crate) fn downmix(interleaved: &[f32], channels: usize) -> Vec<f32> {
    if channels == 1 {
        return interleaved.to_vec();
    }
    interleaved
        .chunks_exact(channels)
        .map(|frame| frame.iter().sum::<f32>() / channels as f32)
        .collect()
}

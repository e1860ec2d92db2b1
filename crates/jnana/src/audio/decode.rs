//! Audio files decoded packet by packet (symphonia), downmixed and resampled to 16 kHz mono as
//! they stream.

use super::{check_format, check_samples, downmix, Resampler, SAMPLE_RATE};
use crate::error::{Error, Result};
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{Decoder, DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

const READABLE: &str = "WAV, MP3, OGG/Vorbis, FLAC or M4A/AAC";

/// A decoded audio file as a stream of 16 kHz mono chunks.
pub struct AudioStream {
    format: Box<dyn FormatReader>,
    decoder: Box<dyn Decoder>,
    track_id: u32,
    sample_rate: u32,
    channels: usize,
    resampler: Resampler,
    /// Frames the container announces, when it does.
    announced_frames: Option<u64>,
    decoded_frames: u64,
    finished: bool,
}

impl AudioStream {
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::open(Box::new(std::io::Cursor::new(bytes)))
    }

    /// Probes the container and opens its first audio track.
    pub fn open(source: Box<dyn MediaSource>) -> Result<Self> {
        if source.byte_len() == Some(0) {
            return Err(Error::Input("the audio file is empty".into()));
        }
        let stream = MediaSourceStream::new(source, Default::default());
        let probed = symphonia::default::get_probe()
            .format(
                &Hint::new(),
                stream,
                &FormatOptions::default(),
                &MetadataOptions::default(),
            )
            .map_err(|e| {
                Error::Input(format!(
                    "not an audio file this app reads ({READABLE}): {e}"
                ))
            })?;
        let format = probed.format;
        let track = format
            .tracks()
            .iter()
            .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
            .ok_or_else(|| Error::Input("the file holds no audio track".into()))?;
        let params = track.codec_params.clone();
        let track_id = track.id;
        let sample_rate = params
            .sample_rate
            .ok_or_else(|| Error::Input("the audio track does not say its sample rate".into()))?;
        let channels = params.channels.map_or(1, |c| c.count());
        check_format(channels, sample_rate)?;
        let decoder = symphonia::default::get_codecs()
            .make(&params, &DecoderOptions::default())
            .map_err(|e| Error::Input(format!("cannot decode this audio's codec: {e}")))?;
        Ok(Self {
            format,
            decoder,
            track_id,
            sample_rate,
            channels,
            resampler: Resampler::new(sample_rate, SAMPLE_RATE)?,
            announced_frames: params.n_frames,
            decoded_frames: 0,
            finished: false,
        })
    }

    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Length announced by the container, in seconds.
    pub fn duration_seconds(&self) -> Option<f64> {
        self.announced_frames
            .map(|n| n as f64 / self.sample_rate as f64)
    }

    /// The next chunk of 16 kHz mono samples; `None` at the end.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<f32>>> {
        let mut out = Vec::new();
        while out.is_empty() {
            if self.finished {
                return Ok(None);
            }
            let packet = match self.format.next_packet() {
                Ok(p) => p,
                Err(SymphoniaError::IoError(e))
                    if e.kind() == std::io::ErrorKind::UnexpectedEof =>
                {
                    self.finished = true;
                    self.check_complete()?;
                    self.resampler.finish(&mut out)?;
                    continue;
                }
                Err(e) => return Err(Error::Input(format!("cannot read the audio: {e}"))),
            };
            if packet.track_id() != self.track_id {
                continue;
            }
            let decoded = match self.decoder.decode(&packet) {
                Ok(d) => d,
                // A damaged packet is skipped, as players do.
                Err(SymphoniaError::DecodeError(_)) => continue,
                Err(e) => return Err(Error::Input(format!("cannot decode the audio: {e}"))),
            };
            let spec = *decoded.spec();
            let mut buf = SampleBuffer::<f32>::new(decoded.capacity() as u64, spec);
            buf.copy_interleaved_ref(decoded);
            let channels = spec.channels.count().max(1);
            let mono = downmix(buf.samples(), channels);
            check_samples(&mono)?;
            self.decoded_frames += mono.len() as u64;
            self.resampler.push(&mono, &mut out)?;
        }
        Ok(Some(out))
    }

    /// A header that promises more audio than the file holds means a cut-off file.
    fn check_complete(&self) -> Result<()> {
        if let Some(announced) = self.announced_frames {
            let slack = self.sample_rate as u64 / 10;
            if self.decoded_frames + slack < announced {
                return Err(Error::Input(format!(
                    "the audio file ends early: its header announces {:.2} s but it holds {:.2} s (cut off?)",
                    announced as f64 / self.sample_rate as f64,
                    self.decoded_frames as f64 / self.sample_rate as f64
                )));
            }
        }
        Ok(())
    }

    /// Reads the whole stream (for short clips; long ones should be consumed chunk by chunk).
    pub fn read_all(mut self) -> Result<Vec<f32>> {
        let mut all = Vec::new();
        while let Some(chunk) = self.next_chunk()? {
            all.extend(chunk);
        }
        Ok(all)
    }
}

impl Iterator for AudioStream {
    type Item = Result<Vec<f32>>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_chunk().transpose()
    }
}

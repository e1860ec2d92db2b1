//! Audio in: formats, resampling, and every kind of bad recording, on a tiny random Whisper.

#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::*;
use jnana::audio::{self, AudioStream, MediaSource};
use jnana::pipeline::{AudioInput, NO_INPUT_REPLY};
use jnana::{GenerationParams, Request};
use std::io::{Read, Seek, SeekFrom};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A WAV header for `frames` frames of `bits`-bit audio (`float` for IEEE float).
fn wav_header(rate: u32, channels: u16, bits: u16, float: bool, frames: u64) -> Vec<u8> {
    let block = channels as u32 * bits as u32 / 8;
    let data = frames * block as u64;
    let mut h = b"RIFF".to_vec();
    h.extend(((36 + data) as u32).to_le_bytes());
    h.extend(b"WAVEfmt ");
    h.extend(16u32.to_le_bytes());
    h.extend((if float { 3u16 } else { 1u16 }).to_le_bytes());
    h.extend(channels.to_le_bytes());
    h.extend(rate.to_le_bytes());
    h.extend((rate * block).to_le_bytes());
    h.extend((block as u16).to_le_bytes());
    h.extend(bits.to_le_bytes());
    h.extend(b"data");
    h.extend((data as u32).to_le_bytes());
    h
}

fn wav_i16(rate: u32, channels: u16, samples: &[f32]) -> Vec<u8> {
    let mut w = wav_header(
        rate,
        channels,
        16,
        false,
        (samples.len() / channels as usize) as u64,
    );
    for s in samples {
        w.extend(((s.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes());
    }
    w
}

fn noise(n: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2654435761).max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as f32 / u32::MAX as f32 - 0.5) * 0.6
        })
        .collect()
}

fn transcribe_bytes(bytes: Vec<u8>) -> jnana::Result<jnana::speech::Transcript> {
    let model = tiny_model();
    model.transcribe(&AudioInput::Encoded(bytes), |_| ControlFlow::Continue(()))
}

#[test]
fn empty_and_non_audio_files_are_named() {
    let e = error_text(AudioStream::from_bytes(Vec::new()).map(|_| ()));
    assert!(e.contains("empty"), "{e}");
    let e = error_text(
        AudioStream::from_bytes(b"this is a shopping list, not a song".to_vec()).map(|_| ()),
    );
    assert!(e.contains("not an audio file"), "{e}");
    let e = error_text(AudioStream::from_bytes(png(10, 10)).map(|_| ()));
    assert!(e.contains("not an audio file"), "{e}");
}

#[test]
fn a_wav_header_promising_more_than_the_file_holds_is_refused() {
    let mut bytes = wav_header(16_000, 1, 16, false, 160_000);
    bytes.extend(vec![0u8; 16_000 * 2]);
    let e = error_text(
        AudioStream::from_bytes(bytes)
            .and_then(|s| s.read_all())
            .map(|_| ()),
    );
    assert!(
        e.contains("ends early") && e.contains("10.00 s") && e.contains("1.00 s"),
        "{e}"
    );
}

#[test]
fn zero_length_audio_is_refused_and_a_tenth_of_a_second_is_heard() {
    let e = error_text(transcribe_bytes(wav_header(16_000, 1, 16, false, 0)));
    assert!(e.contains("empty"), "{e}");
    let model = tiny_model();
    let pcm = AudioInput::Pcm {
        samples: Vec::new(),
        sample_rate: 48_000,
        channels: 2,
    };
    assert!(error_text(model.transcribe(&pcm, |_| ControlFlow::Continue(()))).contains("empty"));

    let short = transcribe_bytes(wav_i16(16_000, 1, &noise(1_600, 1))).unwrap();
    assert_eq!(short.windows.len(), 1);
    assert!((short.audio_seconds - 0.1).abs() < 1e-6);
}

#[test]
fn nan_samples_are_refused() {
    let model = tiny_model();
    let mut samples = noise(8_000, 2);
    samples[100] = f32::NAN;
    let pcm = AudioInput::Pcm {
        samples: samples.clone(),
        sample_rate: 16_000,
        channels: 1,
    };
    let e = error_text(model.transcribe(&pcm, |_| ControlFlow::Continue(())));
    assert!(e.contains("NaN"), "{e}");
    // The same in a float WAV file.
    let mut wav = wav_header(16_000, 1, 32, true, samples.len() as u64);
    for s in &samples {
        wav.extend(s.to_le_bytes());
    }
    let e = error_text(transcribe_bytes(wav));
    assert!(e.contains("NaN"), "{e}");
}

#[test]
fn stereo_24_bit_and_float_files_at_any_rate_become_16k_mono() {
    let seconds = 1.5;
    for (rate, channels, bits, float) in [
        (44_100u32, 2u16, 24u16, false),
        (48_000, 2, 32, true),
        (8_000, 1, 16, false),
    ] {
        let frames = (rate as f64 * seconds) as usize;
        let mut wav = wav_header(rate, channels, bits, float, frames as u64);
        for i in 0..frames * channels as usize {
            let v = (i as f32 * 0.01).sin() * 0.3;
            match (bits, float) {
                (24, false) => wav.extend(&(((v * 8_388_607.0) as i32).to_le_bytes())[..3]),
                (32, true) => wav.extend(v.to_le_bytes()),
                _ => wav.extend(((v * 32767.0) as i16).to_le_bytes()),
            }
        }
        let stream = AudioStream::from_bytes(wav).unwrap();
        assert_eq!(
            (stream.sample_rate(), stream.channels()),
            (rate, channels as usize)
        );
        let samples = stream.read_all().unwrap();
        assert_eq!(samples.len(), (seconds * 16_000.0) as usize, "{rate} Hz");
        assert!(samples.iter().all(|s| s.abs() < 0.4));
    }
    // Interleaved PCM from the browser: the two channels are averaged.
    let pcm: Vec<f32> = (0..32_000).flat_map(|_| [0.5f32, -0.1]).collect();
    let mono = audio::pcm_to_16k_mono(&pcm, 2, 32_000).unwrap();
    assert_eq!(mono.len(), 16_000);
    assert!((mono[8_000] - 0.2).abs() < 1e-3);
}

/// A two-hour 16 kHz mono WAV produced on the fly: nothing of it is ever held in memory.
struct LongWav {
    header: Vec<u8>,
    len: u64,
    pos: u64,
    loud: bool,
    high_water: Arc<AtomicU64>,
}

impl LongWav {
    fn new(seconds: u64, loud: bool) -> (Self, Arc<AtomicU64>) {
        let frames = seconds * 16_000;
        let header = wav_header(16_000, 1, 16, false, frames);
        let len = header.len() as u64 + frames * 2;
        let high_water = Arc::new(AtomicU64::new(0));
        (
            Self {
                header,
                len,
                pos: 0,
                loud,
                high_water: high_water.clone(),
            },
            high_water,
        )
    }
}

impl Read for LongWav {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.len - self.pos) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            let p = self.pos + i as u64;
            *b = if (p as usize) < self.header.len() {
                self.header[p as usize]
            } else if self.loud {
                (p.wrapping_mul(2654435761) >> 7) as u8 & 0x3f
            } else {
                0
            };
        }
        self.pos += n as u64;
        self.high_water.fetch_max(self.pos, Ordering::Relaxed);
        Ok(n)
    }
}

impl Seek for LongWav {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = match to {
            SeekFrom::Start(p) => p,
            SeekFrom::End(d) => (self.len as i64 + d) as u64,
            SeekFrom::Current(d) => (self.pos as i64 + d) as u64,
        };
        Ok(self.pos)
    }
}

impl MediaSource for LongWav {
    fn is_seekable(&self) -> bool {
        true
    }
    fn byte_len(&self) -> Option<u64> {
        Some(self.len)
    }
}

#[test]
fn a_two_hour_recording_is_streamed_window_by_window() {
    let model = tiny_model();
    let speech = model.speech.as_ref().unwrap();
    // Silence: every window is skipped by its level, all two hours are read.
    let (wav, read) = LongWav::new(7_200, false);
    let stream = AudioStream::open(Box::new(wav)).unwrap();
    assert_eq!(stream.duration_seconds(), Some(7_200.0));
    let mut reports = 0;
    let t = speech
        .transcribe_chunks(stream, Some(240), |p| {
            reports += 1;
            assert_eq!(p.total, Some(240));
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!((reports, t.windows.len()), (240, 240));
    assert!(t.windows.iter().all(|w| w.silent) && t.text.is_empty());
    assert_eq!(t.audio_seconds, 7_200.0);
    assert!(read.load(Ordering::Relaxed) > 7_200 * 32_000);

    // Sound: stopped after two windows, having read little more than those minutes.
    let (wav, read) = LongWav::new(7_200, true);
    let stream = AudioStream::open(Box::new(wav)).unwrap();
    let t = speech
        .transcribe_chunks(stream, Some(240), |p| {
            if p.index == 1 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert!(t.cancelled);
    assert_eq!(t.windows.len(), 2);
    assert!(t.windows.iter().all(|w| !w.silent));
    let bytes = read.load(Ordering::Relaxed);
    assert!(
        bytes < 3 * 30 * 32_000,
        "read {bytes} bytes to transcribe one minute"
    );
}

#[test]
fn silence_counts_as_no_audio_and_speech_goes_before_the_text() {
    let model = tiny_model();
    let mut conv = model.new_conversation();
    let params = GenerationParams {
        max_new_tokens: 3,
        ..GenerationParams::default()
    };
    let silent = AudioInput::Pcm {
        samples: vec![0.0; 32_000],
        sample_rate: 16_000,
        channels: 1,
    };
    let a = conv
        .ask(
            &model,
            &Request {
                audio: Some(silent),
                ..Request::default()
            },
            &params,
            |_| ControlFlow::Continue(()),
        )
        .unwrap();
    assert_eq!(a.text, NO_INPUT_REPLY);
    assert_eq!(a.transcript.as_deref(), Some(""));

    let sound = AudioInput::Pcm {
        samples: noise(48_000, 3),
        sample_rate: 48_000,
        channels: 1,
    };
    let heard = model
        .transcribe(&sound, |_| ControlFlow::Continue(()))
        .unwrap()
        .text;
    let request = Request {
        audio: Some(sound),
        text: Some("and this".into()),
        ..Request::default()
    };
    let a = conv
        .ask(&model, &request, &params, |_| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(a.transcript.as_deref(), Some(heard.as_str()));
    let tok = |s: &str| model.tokenizer.encode(s).unwrap().len();
    let transcript_len = if heard.trim().is_empty() {
        0
    } else {
        tok(&heard)
    };
    assert_eq!(
        a.prompt_positions,
        transcript_len + tok("and this") + tok("end of question:")
    );

    // An edited transcript wins over the audio.
    let edited = Request {
        audio: Some(AudioInput::Pcm {
            samples: noise(16_000, 4),
            sample_rate: 16_000,
            channels: 1,
        }),
        transcript: Some("the edited words".into()),
        ..Request::default()
    };
    let b = model
        .new_conversation()
        .ask(&model, &edited, &params, |_| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(b.transcript, None);
    assert_eq!(
        b.prompt_positions,
        tok("the edited words") + tok("end of question:")
    );
}

#[test]
fn flac_ogg_vorbis_and_mp3_files_decode() {
    let dir = std::env::temp_dir().join(format!("jnana-formats-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (file, rate, channels) in [
        ("a.flac", 44_100, 2),
        ("a.ogg", 48_000, 1),
        ("a.mp3", 22_050, 1),
    ] {
        let path = dir.join(file);
        let status = std::process::Command::new("sox")
            .args(["-n", "-r", &rate.to_string(), "-c", &channels.to_string()])
            .arg(&path)
            .args(["synth", "1.5", "sine", "440", "vol", "0.5"])
            .status()
            .expect("sox is installed by scripts/setup.sh");
        assert!(status.success(), "{file}");
        let stream = AudioStream::open(Box::new(std::fs::File::open(&path).unwrap())).unwrap();
        assert_eq!(stream.sample_rate(), rate, "{file}");
        let samples = stream.read_all().unwrap();
        // Encoders pad the start and end (MP3 by up to a frame): within a tenth of a second.
        let seconds = samples.len() as f32 / 16_000.0;
        assert!((seconds - 1.5).abs() < 0.1, "{file}: {seconds} s");
        let middle = &samples[4_000..20_000];
        let crossings = middle
            .windows(2)
            .filter(|p| p[0] < 0.0 && p[1] >= 0.0)
            .count();
        assert!(
            (crossings as i64 - 440).abs() <= 3,
            "{file}: {crossings} cycles in 1 s"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

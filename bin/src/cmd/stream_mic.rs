//! Microphone capture for `voxtok stream` (cpal; `--features mic`): the
//! device's native rate and channel count, mixed down and resampled.
//!
//! The cpal stream lives on its own thread (it is not `Send` everywhere);
//! the callback forwards interleaved f32 blocks over a channel that
//! [`MicSource`] reads. Device problems (none, permission, disconnection,
//! no audio for a while) become [`LiveError`]s with a clear message.

use anyhow::bail;
use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{Error as CpalError, ErrorKind, FromSample, SampleFormat, SizedSample};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;
use voxtok_codecs::decode::mixdown;
use voxtok_codecs::live::{LiveError, LiveSource};
use voxtok_codecs::resample::{Quality, Resampler};

/// No audio for this long means the device stalled.
const STALL: Duration = Duration::from_secs(5);

enum MicMsg {
    Data(Vec<f32>),
    Error(String),
}

/// A capture device delivering mono audio at a chosen rate.
pub struct MicSource {
    name: String,
    rx: Receiver<MicMsg>,
    channels: usize,
    rs: Resampler,
    closed: Arc<AtomicBool>,
}

fn explain(e: &CpalError) -> String {
    let hint = match e.kind() {
        ErrorKind::PermissionDenied => {
            " (no permission to record: on Linux add the user to the `audio` group; \
             on macOS allow microphone access for the terminal)"
        }
        ErrorKind::DeviceNotAvailable => " (the device is gone: unplugged or disabled?)",
        ErrorKind::HostUnavailable => " (no audio system: is ALSA/PulseAudio/PipeWire running?)",
        ErrorKind::DeviceBusy => " (another program is using the device)",
        _ => "",
    };
    format!("{e}{hint}")
}

fn device_name(d: &cpal::Device) -> String {
    d.description()
        .map(|x| x.name().to_string())
        .unwrap_or_else(|_| "<unnamed device>".into())
}

/// The backend's id of a device (e.g. ALSA `alsa:hw:CARD=PCH,DEV=0`).
fn device_id(d: &cpal::Device) -> String {
    d.id().map(|i| i.to_string()).unwrap_or_default()
}

/// Prints the capture devices (default marked with `*`): name, [id], default format.
pub fn list_devices() -> anyhow::Result<()> {
    let host = cpal::default_host();
    let default = host.default_input_device().map(|d| device_name(&d));
    let devices = host
        .input_devices()
        .map_err(|e| anyhow::anyhow!("cannot list audio devices: {}", explain(&e)))?;
    let mut n = 0;
    for d in devices {
        let name = device_name(&d);
        let cfg = match d.default_input_config() {
            Ok(c) => format!(
                "{} Hz, {} ch, {}",
                c.sample_rate(),
                c.channels(),
                c.sample_format()
            ),
            Err(e) => format!("unusable: {}", explain(&e)),
        };
        let mark = if Some(&name) == default.as_ref() {
            "*"
        } else {
            " "
        };
        println!("{mark} {name}\t[{}]\t{cfg}", device_id(&d));
        n += 1;
    }
    if n == 0 {
        bail!("no audio capture device found");
    }
    Ok(())
}

fn find_device(host: &cpal::Host, want: Option<&str>) -> Result<cpal::Device, String> {
    match want {
        None => host.default_input_device().ok_or_else(|| {
            "no microphone: the system has no default capture device (see --list-devices)".into()
        }),
        Some(w) => {
            let devices = host
                .input_devices()
                .map_err(|e| format!("cannot list audio devices: {}", explain(&e)))?;
            let all: Vec<cpal::Device> = devices.collect();
            let lw = w.to_lowercase();
            let id_matches = |d: &cpal::Device| {
                let id = device_id(d);
                id == w || id.split_once(':').is_some_and(|(_, x)| x == w)
            };
            all.iter()
                .find(|d| device_name(d) == w || id_matches(d))
                .or_else(|| {
                    all.iter()
                        .find(|d| device_name(d).to_lowercase().contains(&lw))
                })
                .cloned()
                .ok_or_else(|| {
                    let names: Vec<String> = all
                        .iter()
                        .map(|d| format!("{} [{}]", device_name(d), device_id(d)))
                        .collect();
                    format!(
                        "no capture device matches `{w}` (devices: {})",
                        if names.is_empty() {
                            "none".into()
                        } else {
                            names.join(", ")
                        }
                    )
                })
        }
    }
}

fn build<T>(
    device: &cpal::Device,
    config: cpal::StreamConfig,
    tx: Sender<MicMsg>,
    closed: Arc<AtomicBool>,
) -> Result<cpal::Stream, CpalError>
where
    T: SizedSample + Send + 'static,
    f32: FromSample<T>,
{
    let etx = tx.clone();
    device.build_input_stream::<T, _, _>(
        config,
        move |data: &[T], _: &_| {
            let v: Vec<f32> = data.iter().map(|&s| s.to_sample::<f32>()).collect();
            if tx.send(MicMsg::Data(v)).is_err() {
                closed.store(true, Ordering::SeqCst);
            }
        },
        move |e: CpalError| match e.kind() {
            ErrorKind::Xrun | ErrorKind::RealtimeDenied | ErrorKind::DeviceChanged => {
                tracing::warn!("audio input: {e}")
            }
            _ => {
                let _ = etx.send(MicMsg::Error(explain(&e)));
            }
        },
        None,
    )
}

impl MicSource {
    /// Opens `device` (name or part of it; the default when `None`),
    /// delivering mono audio at `rate` Hz.
    pub fn open(device: Option<&str>, rate: u32, _chunk_ms: u32) -> Result<Self, LiveError> {
        let want = device.map(String::from);
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(String, u32, u16), String>>();
        let closed = Arc::new(AtomicBool::new(false));
        let c2 = closed.clone();
        std::thread::spawn(move || {
            let r = (|| -> Result<(cpal::Stream, (String, u32, u16)), String> {
                let host = cpal::default_host();
                let d = find_device(&host, want.as_deref())?;
                let name = device_name(&d);
                let cfg = d
                    .default_input_config()
                    .map_err(|e| format!("{name}: no usable input format: {}", explain(&e)))?;
                let info = (name.clone(), cfg.sample_rate(), cfg.channels());
                let sc: cpal::StreamConfig = cfg.config();
                let s = match cfg.sample_format() {
                    SampleFormat::F32 => build::<f32>(&d, sc, tx, c2.clone()),
                    SampleFormat::I16 => build::<i16>(&d, sc, tx, c2.clone()),
                    SampleFormat::I32 => build::<i32>(&d, sc, tx, c2.clone()),
                    SampleFormat::U16 => build::<u16>(&d, sc, tx, c2.clone()),
                    SampleFormat::I8 => build::<i8>(&d, sc, tx, c2.clone()),
                    f => return Err(format!("{name}: unsupported sample format {f}")),
                }
                .map_err(|e| format!("{name}: cannot open the input stream: {}", explain(&e)))?;
                s.play()
                    .map_err(|e| format!("{name}: cannot start recording: {}", explain(&e)))?;
                Ok((s, info))
            })();
            match r {
                Ok((stream, info)) => {
                    let _ = ready_tx.send(Ok(info));
                    // Keep the stream alive until the reader goes away.
                    while !c2.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    drop(stream);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        });
        let (name, native, channels) = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| LiveError::Device("the audio device did not open within 10 s".into()))?
            .map_err(LiveError::Device)?;
        tracing::info!("recording from {name}: {native} Hz, {channels} ch -> {rate} Hz mono");
        let rs = Resampler::new(native, rate, Quality::High)?;
        Ok(MicSource {
            name,
            rx,
            channels: channels.max(1) as usize,
            rs,
            closed,
        })
    }
}

impl Drop for MicSource {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

impl LiveSource for MicSource {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn sample_rate(&self) -> u32 {
        self.rs.to_rate()
    }

    fn next_chunk(&mut self) -> Result<Option<Vec<f32>>, LiveError> {
        loop {
            match self.rx.recv_timeout(STALL) {
                Ok(MicMsg::Data(v)) => {
                    let mono = mixdown(&v, self.channels);
                    let out = self.rs.process(&mono)?;
                    if !out.is_empty() {
                        return Ok(Some(out));
                    }
                }
                Ok(MicMsg::Error(e)) => {
                    return Err(LiveError::Device(format!(
                        "{}: recording stopped: {e}",
                        self.name
                    )))
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(LiveError::Stalled {
                        name: self.name.clone(),
                        secs: STALL.as_secs_f64(),
                    })
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(LiveError::Device(format!(
                        "{}: the capture stream closed (device lost?)",
                        self.name
                    )))
                }
            }
        }
    }

    fn is_live(&self) -> bool {
        true
    }
}

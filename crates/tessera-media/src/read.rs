//! Reading any supported input into a [`Video`], detected by content rather than extension.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use image::AnimationDecoder;

use crate::color::Upsampling;
use crate::error::{MediaError, Result};
use crate::h264::{parse_sps, split_length_prefixed, H264Decoder, SpsError};
use crate::mp4::{demux, DemuxError, COMPRESSOR_NAME};
use crate::video::{check_fps, check_size, Video};

/// Upper bound on decoded RGB bytes for one read (8 GiB, ~100 s of 1080p): a header claiming
/// more is refused before decoding instead of exhausting memory.
pub const MAX_DECODED_BYTES: u64 = 8 << 30;

/// Frame rate given to a directory of frames, which records none (the project's default rate).
pub const FOLDER_FPS: f64 = 16.0;

/// GIF players show a 0 delay as 100 ms; so do we.
const GIF_ZERO_DELAY_MS: u64 = 100;

/// What the first bytes say a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Mp4,
    Gif,
    Png,
    Jpeg,
}

/// Detects the container from magic bytes; `None` for anything not read natively.
pub fn sniff(data: &[u8]) -> Option<Format> {
    const MP4_BOXES: [&[u8; 4]; 11] = [
        b"ftyp", b"styp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"moof", b"sidx",
        b"uuid",
    ];
    if data.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Format::Png)
    } else if data.starts_with(&[0xff, 0xd8, 0xff]) {
        Some(Format::Jpeg)
    } else if data.starts_with(b"GIF87a") || data.starts_with(b"GIF89a") {
        Some(Format::Gif)
    } else if data.len() >= 8 && MP4_BOXES.iter().any(|b| &data[4..8] == *b) {
        Some(Format::Mp4)
    } else {
        None
    }
}

/// Reads a video, image or frame directory. Formats not read natively go through `ffmpeg` when
/// it is on PATH; otherwise the native error (naming the supported formats) is returned.
pub fn read_video(path: impl AsRef<Path>) -> Result<Video> {
    let path = path.as_ref();
    match read_video_native(path) {
        Err(MediaError::UnsupportedFormat { .. } | MediaError::UnsupportedCodec { .. })
            if ffmpeg_available() =>
        {
            read_with_ffmpeg(path)
        }
        other => other,
    }
}

/// Like [`read_video`] but never runs ffmpeg, so results do not depend on the machine.
pub fn read_video_native(path: impl AsRef<Path>) -> Result<Video> {
    let path = path.as_ref();
    let meta = std::fs::metadata(path).map_err(|e| MediaError::io(path, "reading metadata", e))?;
    if meta.is_dir() {
        return read_folder(path);
    }
    let data = std::fs::read(path).map_err(|e| MediaError::io(path, "reading", e))?;
    decode_bytes_as(&data, path)
}

/// Decodes an in-memory file (MP4/MOV, GIF, PNG, JPEG), detected by content.
pub fn decode_bytes(data: &[u8]) -> Result<Video> {
    decode_bytes_as(data, Path::new("<memory>"))
}

fn decode_bytes_as(data: &[u8], path: &Path) -> Result<Video> {
    if data.is_empty() {
        return Err(MediaError::EmptyFile { path: path.into() });
    }
    match sniff(data) {
        Some(Format::Mp4) => decode_mp4(data, path),
        Some(Format::Gif) => decode_gif(data, path),
        Some(Format::Png | Format::Jpeg) => {
            let (width, height, rgb) = decode_image(data, path)?;
            Ok(Video {
                width,
                height,
                fps: FOLDER_FPS,
                frames: vec![rgb],
            })
        }
        None if looks_like_text(data) => {
            let start: String = String::from_utf8_lossy(&data[..data.len().min(40)]).into();
            Err(MediaError::TextFile {
                path: path.into(),
                start,
            })
        }
        None => Err(MediaError::UnsupportedFormat {
            path: path.into(),
            magic: data
                .iter()
                .take(8)
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" "),
        }),
    }
}

fn looks_like_text(data: &[u8]) -> bool {
    let head = &data[..data.len().min(512)];
    match std::str::from_utf8(head) {
        Ok(s) => s.chars().all(|c| !c.is_control() || c.is_whitespace()),
        // A multi-byte character cut at the 512-byte boundary is still text.
        Err(e) => e.valid_up_to() + 4 > head.len() && e.valid_up_to() > 0,
    }
}

fn guard_memory(path: &Path, width: u32, height: u32, frames: usize) -> Result<()> {
    let bytes = (width as u64 * height as u64 * 3).saturating_mul(frames as u64);
    if bytes > MAX_DECODED_BYTES {
        return Err(MediaError::TooLarge {
            path: path.into(),
            bytes,
            limit: MAX_DECODED_BYTES,
        });
    }
    Ok(())
}

/// Provenance stored with a video ([`crate::VideoWriter::set_provenance`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Provenance {
    /// The manifest as written (Tessera writes JSON).
    pub manifest: Vec<u8>,
    /// SHA-256 (hex) the manifest was bound to ([`crate::VideoWriter::content_sha256`]).
    pub sha256: String,
    /// Whether the picture data is byte for byte what the manifest was bound to; false after
    /// any edit of the frames that kept the box.
    pub intact: bool,
}

/// The provenance an MP4 or PNG file carries; `None` for other formats and for files without
/// it (a re-encode drops it: the watermark is what survives that).
pub fn read_provenance(path: impl AsRef<Path>) -> Result<Option<Provenance>> {
    let path = path.as_ref();
    let data = std::fs::read(path).map_err(|e| MediaError::io(path, "reading", e))?;
    match sniff(&data) {
        Some(Format::Mp4) => {}
        Some(Format::Png) => return png_provenance(&data, path),
        Some(Format::Gif) => return gif_provenance(&data),
        _ => return Ok(None),
    }
    crate::mp4::find_provenance(&data)
        .map(|found| {
            found.map(|(manifest, sha256, intact)| Provenance {
                manifest,
                sha256,
                intact,
            })
        })
        .map_err(|e| match e {
            DemuxError::Truncated(detail) => MediaError::TruncatedMp4 {
                path: path.into(),
                detail,
            },
            other => MediaError::CorruptMp4 {
                path: path.into(),
                detail: format!("{other:?}"),
            },
        })
}

/// A GIF's provenance extension ([`crate::VideoWriter::set_provenance`]), checked against the
/// hash of its frames' pixels as decoded.
fn gif_provenance(data: &[u8]) -> Result<Option<Provenance>> {
    use sha2::Digest;
    let Some(payload) = gif_application_data(data, crate::write::GIF_PROVENANCE_APP) else {
        return Ok(None);
    };
    let split = payload
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(payload.len());
    let sha256 = String::from_utf8_lossy(&payload[..split]).into_owned();
    let manifest = payload.get(split + 1..).unwrap_or_default().to_vec();
    let video = decode_bytes(data)?;
    let mut pixels = sha2::Sha256::new();
    video.frames.iter().for_each(|f| pixels.update(f));
    let intact = sha256 == crate::write::hex(&pixels.finalize());
    Ok(Some(Provenance {
        manifest,
        sha256,
        intact,
    }))
}

/// The data sub-blocks of the first application extension named `app` (identifier + code),
/// found by walking the GIF's blocks; `None` if there is none or the file ends early.
fn gif_application_data(data: &[u8], app: &[u8; 11]) -> Option<Vec<u8>> {
    // Sub-blocks from `at` up to the empty one; returns their bytes and the position after.
    let sub_blocks = |mut at: usize| -> Option<(Vec<u8>, usize)> {
        let mut out = Vec::new();
        loop {
            let n = *data.get(at)? as usize;
            if n == 0 {
                return Some((out, at + 1));
            }
            out.extend_from_slice(data.get(at + 1..at + 1 + n)?);
            at += 1 + n;
        }
    };
    let table = |flags: u8| {
        if flags & 0x80 != 0 {
            3 << ((flags & 7) + 1)
        } else {
            0
        }
    };
    let mut at = 13 + table(*data.get(10)?);
    loop {
        match *data.get(at)? {
            0x21 if data.get(at + 1) == Some(&0xff) && data.get(at + 2) == Some(&11) => {
                let name = data.get(at + 3..at + 14)?;
                let (payload, next) = sub_blocks(at + 14)?;
                if name == app {
                    return Some(payload);
                }
                at = next;
            }
            0x21 => at = sub_blocks(at + 2)?.1,
            0x2c => {
                let flags = *data.get(at + 9)?;
                // Descriptor, local table, LZW code size, then the image's sub-blocks.
                at = sub_blocks(at + 10 + table(flags) + 1)?.1;
            }
            _ => return None, // 0x3b, the trailer, or garbage
        }
    }
}

/// A PNG's manifest text chunk, checked against the hash of its pixels as decoded.
fn png_provenance(data: &[u8], path: &Path) -> Result<Option<Provenance>> {
    use crate::write::{sha256_hex, PNG_HASH_KEY, PNG_MANIFEST_KEY};
    let bad = |detail: String| MediaError::Image {
        path: path.into(),
        detail,
    };
    let reader = png::Decoder::new(Cursor::new(data))
        .read_info()
        .map_err(|e| bad(e.to_string()))?;
    let info = reader.info();
    let Some(manifest) = info
        .utf8_text
        .iter()
        .find(|c| c.keyword == PNG_MANIFEST_KEY)
    else {
        return Ok(None);
    };
    let manifest = manifest.get_text().map_err(|e| bad(e.to_string()))?;
    let hash = info
        .uncompressed_latin1_text
        .iter()
        .find(|c| c.keyword == PNG_HASH_KEY)
        .map(|c| c.text.clone());
    let video = decode_bytes(data)?;
    let sha256 = hash.unwrap_or_default();
    let intact = video.frames.len() == 1 && sha256 == sha256_hex(&video.frames[0]);
    Ok(Some(Provenance {
        manifest: manifest.into_bytes(),
        sha256,
        intact,
    }))
}

// ---------------------------------------------------------------------------------------------
// MP4
// ---------------------------------------------------------------------------------------------

fn decode_mp4(data: &[u8], path: &Path) -> Result<Video> {
    let p = || PathBuf::from(path);
    let track = demux(data).map_err(|e| match e {
        DemuxError::Truncated(detail) => MediaError::TruncatedMp4 { path: p(), detail },
        DemuxError::Corrupt(detail) => MediaError::CorruptMp4 { path: p(), detail },
        DemuxError::NoVideoTrack => MediaError::NoVideoTrack { path: p() },
        DemuxError::UnsupportedCodec(codec) => MediaError::UnsupportedCodec { path: p(), codec },
    })?;
    let corrupt = |detail: String| MediaError::CorruptMp4 { path: p(), detail };
    if track.samples.is_empty() {
        return Err(corrupt("the video track has no samples".into()));
    }
    let nls = track.nal_length_size;
    let sample_nals = |i: usize| -> Result<Vec<&[u8]>> {
        split_length_prefixed(&data[track.samples[i].range.clone()], nls)
            .ok_or_else(|| corrupt(format!("sample {i}: NAL unit lengths overrun the sample")))
    };
    // avc3 streams carry the SPS in band, so fall back to the first sample's.
    let sps_nal = match track.sps.first() {
        Some(s) => s.clone(),
        None => sample_nals(0)?
            .into_iter()
            .find(|n| n.first().map(|b| b & 0x1f) == Some(7))
            .ok_or_else(|| corrupt("no SPS in 'avcC' or the first sample".into()))?
            .to_vec(),
    };
    let sps = parse_sps(&sps_nal).map_err(|e| match e {
        SpsError::Malformed(d) => corrupt(format!("bad SPS: {d}")),
        SpsError::Unsupported(codec) => MediaError::UnsupportedCodec { path: p(), codec },
    })?;
    let n = track.samples.len();
    guard_memory(path, sps.width, sps.height, n)?;
    let fps = track_fps(&track.samples, track.timescale)
        .ok_or_else(|| corrupt("sample durations give no valid frame rate".into()))?;

    let decode_err = |sample: usize, detail: String| MediaError::Decode {
        path: p(),
        sample,
        detail,
    };
    let mut dec = H264Decoder::new().map_err(|d| decode_err(0, d))?;
    dec.set_sps(sps.clone());
    if track.compressor == COMPRESSOR_NAME {
        dec.set_upsampling(Upsampling::LumaGuided);
    }
    let mut frames = Vec::with_capacity(n);
    let mut annexb = Vec::new();
    for i in 0..n {
        annexb.clear();
        if i == 0 {
            for nal in track.sps.iter().chain(&track.pps) {
                annexb.extend_from_slice(&[0, 0, 0, 1]);
                annexb.extend_from_slice(nal);
            }
        }
        for nal in sample_nals(i)? {
            annexb.extend_from_slice(&[0, 0, 0, 1]);
            annexb.extend_from_slice(nal);
        }
        if let Some(frame) = dec.decode(&annexb).map_err(|d| decode_err(i, d))? {
            frames.push(frame);
        }
    }
    frames.extend(dec.finish().map_err(|d| decode_err(n - 1, d))?);
    let frame_len = sps.width as usize * sps.height as usize * 3;
    if frames.len() != n || frames.iter().any(|f| f.len() != frame_len) {
        return Err(decode_err(
            n - 1,
            format!(
                "decoder returned {} frames of the expected {n} at {}x{}",
                frames.iter().filter(|f| f.len() == frame_len).count(),
                sps.width,
                sps.height
            ),
        ));
    }
    Ok(Video {
        width: sps.width,
        height: sps.height,
        fps,
        frames,
    })
}

/// Frame rate from the most common sample duration (robust to a short last sample).
fn track_fps(samples: &[crate::mp4::Sample], timescale: u32) -> Option<f64> {
    let mut durations: Vec<u32> = samples
        .iter()
        .map(|s| s.duration)
        .filter(|&d| d > 0)
        .collect();
    durations.sort_unstable();
    let mut best = (0usize, 0u32);
    let mut i = 0;
    while i < durations.len() {
        let j = durations[i..].partition_point(|&d| d == durations[i]) + i;
        if j - i > best.0 {
            best = (j - i, durations[i]);
        }
        i = j;
    }
    let fps = timescale as f64 / best.1 as f64;
    check_fps(fps).ok().map(|_| fps)
}

// ---------------------------------------------------------------------------------------------
// GIF, PNG, JPEG, frame folders
// ---------------------------------------------------------------------------------------------

fn image_err(path: &Path, e: impl std::fmt::Display) -> MediaError {
    MediaError::Image {
        path: path.into(),
        detail: e.to_string(),
    }
}

fn decode_gif(data: &[u8], path: &Path) -> Result<Video> {
    if data.len() < 10 {
        return Err(image_err(path, "GIF header cut short"));
    }
    let width = u16::from_le_bytes([data[6], data[7]]) as u32;
    let height = u16::from_le_bytes([data[8], data[9]]) as u32;
    check_size(width as u64, height as u64)?;
    let decoder =
        image::codecs::gif::GifDecoder::new(Cursor::new(data)).map_err(|e| image_err(path, e))?;
    let mut frames = Vec::new();
    let mut total_ms = 0u64;
    for frame in decoder.into_frames() {
        let frame = frame.map_err(|e| image_err(path, e))?;
        let (num, den) = frame.delay().numer_denom_ms();
        let ms = num.checked_div(den).unwrap_or(0) as u64;
        total_ms += if ms == 0 { GIF_ZERO_DELAY_MS } else { ms };
        let rgba = frame.into_buffer();
        if rgba.width() != width || rgba.height() != height {
            return Err(image_err(
                path,
                "GIF frame size differs from the logical screen",
            ));
        }
        guard_memory(path, width, height, frames.len() + 1)?;
        // Transparent pixels show the page behind; we composite on black.
        let rgb: Vec<u8> = rgba
            .pixels()
            .flat_map(|p| {
                let a = p[3] as u32;
                [0, 1, 2].map(|c| ((p[c] as u32 * a + 127) / 255) as u8)
            })
            .collect();
        frames.push(rgb);
    }
    if frames.is_empty() {
        return Err(image_err(path, "GIF has no frames"));
    }
    let fps = (frames.len() as f64 * 1000.0 / total_ms as f64).min(crate::video::MAX_FPS);
    Ok(Video {
        width,
        height,
        fps,
        frames,
    })
}

/// Decodes one PNG/JPEG to RGB8, checking its size before allocating pixels.
fn decode_image(data: &[u8], path: &Path) -> Result<(u32, u32, Vec<u8>)> {
    let reader = || {
        image::ImageReader::new(Cursor::new(data))
            .with_guessed_format()
            .map_err(|e| image_err(path, e))
    };
    let (w, h) = reader()?
        .into_dimensions()
        .map_err(|e| image_err(path, e))?;
    check_size(w as u64, h as u64)?;
    let img = reader()?.decode().map_err(|e| image_err(path, e))?;
    Ok((w, h, img.to_rgb8().into_raw()))
}

/// Sort key putting `frame_2` before `frame_10`.
fn natural_key(name: &str) -> (String, u64, String) {
    let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
    let digits: String = stem
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let prefix = stem[..stem.len() - digits.len()].to_string();
    (prefix, digits.parse().unwrap_or(0), name.to_string())
}

fn read_folder(dir: &Path) -> Result<Video> {
    let entries = std::fs::read_dir(dir).map_err(|e| MediaError::io(dir, "listing", e))?;
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| MediaError::io(dir, "listing", e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
        if matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg")) && !name.starts_with('.') {
            files.push((name, entry.path()));
        }
    }
    if files.is_empty() {
        return Err(MediaError::EmptyFolder { path: dir.into() });
    }
    files.sort_by_cached_key(|(name, _)| natural_key(name));
    let mut video: Option<Video> = None;
    for (_, file) in &files {
        let data = std::fs::read(file).map_err(|e| MediaError::io(file, "reading", e))?;
        if data.is_empty() {
            return Err(MediaError::EmptyFile { path: file.clone() });
        }
        let (w, h, rgb) = decode_image(&data, file)?;
        let v = video.get_or_insert_with(|| Video::new(w, h, FOLDER_FPS));
        if (w, h) != (v.width, v.height) {
            return Err(MediaError::MixedFrameSizes {
                path: file.clone(),
                width: v.width,
                height: v.height,
                got_w: w,
                got_h: h,
            });
        }
        guard_memory(dir, w, h, v.frames.len() + 1)?;
        v.frames.push(rgb);
    }
    video.ok_or(MediaError::EmptyFolder { path: dir.into() })
}

// ---------------------------------------------------------------------------------------------
// ffmpeg fallback
// ---------------------------------------------------------------------------------------------

/// True when both `ffmpeg` and `ffprobe` run.
pub fn ffmpeg_available() -> bool {
    let runs = |tool: &str| {
        Command::new(tool)
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    runs("ffprobe") && runs("ffmpeg")
}

/// Decodes anything ffmpeg reads: probe size and rate, then pipe raw RGB24 frames.
pub fn read_with_ffmpeg(path: &Path) -> Result<Video> {
    let fail = |detail: String| MediaError::Ffmpeg {
        path: path.into(),
        detail,
    };
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .args([
            "stream=width,height,avg_frame_rate,r_frame_rate",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .map_err(|e| fail(format!("could not run ffprobe: {e}")))?;
    if !probe.status.success() {
        return Err(fail(ffmpeg_said(path, &probe.stderr)));
    }
    let text = String::from_utf8_lossy(&probe.stdout);
    let fields: Vec<&str> = text
        .lines()
        .next()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .collect();
    let (width, height) = match (
        fields.first().map(|s| s.parse::<u32>()),
        fields.get(1).map(|s| s.parse::<u32>()),
    ) {
        (Some(Ok(w)), Some(Ok(h))) => (w, h),
        _ => {
            return Err(fail(format!(
                "no video stream found (ffprobe said {text:?})"
            )))
        }
    };
    check_size(width as u64, height as u64)?;
    let rate = |s: Option<&&str>| -> Option<f64> {
        let (n, d) = s?.split_once('/')?;
        let v = n.parse::<f64>().ok()? / d.parse::<f64>().ok()?;
        check_fps(v).ok().map(|_| v)
    };
    let fps = rate(fields.get(2))
        .or(rate(fields.get(3)))
        .unwrap_or(FOLDER_FPS);
    let mut child = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(path)
        .args(["-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("could not run ffmpeg: {e}")))?;
    let frame_len = width as usize * height as usize * 3;
    let mut frames = Vec::new();
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| fail("no stdout pipe".into()))?;
    let read_result = loop {
        let mut frame = vec![0u8; frame_len];
        match stdout.read_exact(&mut frame) {
            Ok(()) => {
                if let Err(e) = guard_memory(path, width, height, frames.len() + 1) {
                    let _ = child.kill();
                    break Err(e);
                }
                frames.push(frame);
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break Ok(()),
            Err(e) => break Err(fail(format!("reading frames: {e}"))),
        }
    };
    let output = child
        .wait_with_output()
        .map_err(|e| fail(format!("waiting for ffmpeg: {e}")))?;
    read_result?;
    if !output.status.success() {
        return Err(fail(ffmpeg_said(path, &output.stderr)));
    }
    if frames.is_empty() {
        return Err(fail("ffmpeg produced no frames".into()));
    }
    Ok(Video {
        width,
        height,
        fps,
        frames,
    })
}

/// ffmpeg's complaint in one line: the lines joined, without the `[demuxer @ 0xADDRESS]` tags
/// (a new address each run) and the input path it repeats.
fn ffmpeg_said(path: &Path, stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let shown = format!("{}: ", path.display());
    let mut lines: Vec<&str> = Vec::new();
    for line in text.lines() {
        let mut l = line.trim();
        if l.starts_with('[') {
            if let Some((_, rest)) = l.split_once("] ") {
                l = rest;
            }
        }
        let l = l.strip_prefix(&shown).unwrap_or(l).trim();
        if !l.is_empty() && !lines.contains(&l) {
            lines.push(l);
        }
    }
    lines.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing() {
        assert_eq!(sniff(b"\0\0\0\x20ftypisom"), Some(Format::Mp4));
        assert_eq!(sniff(b"GIF89a.."), Some(Format::Gif));
        assert_eq!(sniff(b"\xff\xd8\xff\xe0"), Some(Format::Jpeg));
        assert_eq!(sniff(b"hello world"), None);
        assert!(looks_like_text("plain text, naïve\n".as_bytes()));
        assert!(!looks_like_text(&[0x1a, 0x45, 0xdf, 0xa3, 0x01]));
    }

    #[test]
    fn ffmpeg_complaints_lose_addresses_and_repeats() {
        let said = b"[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55a335bd2900] moov atom not found\n\
                     clips/a.mp4: Invalid data found when processing input\n";
        assert_eq!(
            ffmpeg_said(Path::new("clips/a.mp4"), said),
            "moov atom not found; Invalid data found when processing input"
        );
    }

    #[test]
    fn natural_order() {
        let mut names = vec!["f_10.png", "f_2.png", "f_1.png"];
        names.sort_by_cached_key(|n| natural_key(n));
        assert_eq!(names, ["f_1.png", "f_2.png", "f_10.png"]);
    }
}

//! Writing MP4 (H.264), GIF, a single PNG or a directory of PNG frames.
//!
//! Every output is built in a temporary file (or directory) beside the target and renamed into
//! place by `finish`, so readers never see a half-written file and a dropped writer leaves
//! nothing behind.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use tempfile::{NamedTempFile, TempDir};

use crate::error::{MediaError, Result};
use crate::h264::{H264Encoder, MAX_ENCODE_LONG_SIDE, MAX_ENCODE_SHORT_SIDE};
use crate::mp4::{provenance_box, timescale_for, write_header, MuxSample, MuxTrack};
use crate::video::{check_fps, check_size, Video};

/// Output kind, from the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    Mp4,
    Gif,
    Png,
    /// A directory of `frame_00000.png`, `frame_00001.png`, ...
    PngFolder,
}

impl OutputKind {
    /// `.mp4`/`.m4v`, `.gif`, `.png`; an existing directory or an extension-less path is a
    /// frame folder.
    pub fn from_path(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        match ext.as_deref() {
            _ if path.is_dir() => Ok(Self::PngFolder),
            Some("mp4" | "m4v") => Ok(Self::Mp4),
            Some("gif") => Ok(Self::Gif),
            Some("png") => Ok(Self::Png),
            None => Ok(Self::PngFolder),
            Some(_) => Err(MediaError::UnsupportedOutput { path: path.into() }),
        }
    }
}

/// Writes `video` to `path`, format chosen by [`OutputKind::from_path`].
pub fn write_video(path: impl AsRef<Path>, video: &Video) -> Result<()> {
    let path = path.as_ref();
    video.validate()?;
    if video.frames.is_empty() {
        return Err(MediaError::NoFrames);
    }
    if OutputKind::from_path(path)? == OutputKind::Png && video.frames.len() > 1 {
        return Err(MediaError::PngMultiFrame {
            path: path.into(),
            frames: video.frames.len(),
        });
    }
    let mut w = VideoWriter::create(path, video.width, video.height, video.fps)?;
    for frame in &video.frames {
        w.push_frame(frame)?;
    }
    w.finish()
}

/// Encodes `video` to MP4 bytes in memory (what [`write_video`] writes for `.mp4`).
pub fn encode_mp4(video: &Video) -> Result<Vec<u8>> {
    video.validate()?;
    let mut sink = Mp4Sink::new(video.width, video.height, video.fps)?;
    for (i, frame) in video.frames.iter().enumerate() {
        sink.push(frame, i)?;
    }
    sink.into_bytes()
}

/// Streams frames to a file: only encoded data (MP4) or nothing (GIF, PNG) is kept between
/// frames, never the raw frames.
pub struct VideoWriter {
    path: PathBuf,
    width: u32,
    height: u32,
    frames: usize,
    sink: Sink,
}

enum Sink {
    Mp4 {
        // Boxed: the encoder state is ~7 KB, the other sinks a few words.
        mp4: Box<Mp4Sink>,
        tmp: NamedTempFile,
    },
    Gif {
        enc: gif::Encoder<BufWriter<NamedTempFile>>,
        fps: f64,
        /// Over the frames as a decoder will see them (after palette quantisation).
        pixels: sha2::Sha256,
        provenance: Option<Vec<u8>>,
    },
    /// The frame waits for `finish`, so provenance set after it can still go in.
    Png {
        tmp: NamedTempFile,
        rgb: Option<Vec<u8>>,
        provenance: Option<Vec<u8>>,
    },
    Folder {
        tmp: TempDir,
    },
}

/// A temp file beside `path` for an atomic write (write it, then `persist(path)`). Temp files
/// are private (0600) by default; this one is 0644, so the renamed output is a normal user file.
pub fn temp_file_beside(path: &Path) -> std::io::Result<NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o644));
    }
    builder
        .prefix(".tessera-")
        .suffix(".part")
        .tempfile_in(parent_dir(path))
}

fn temp_beside(path: &Path) -> Result<NamedTempFile> {
    temp_file_beside(path)
        .map_err(|e| MediaError::io(parent_dir(path), "creating a temporary file in", e))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

impl VideoWriter {
    /// Opens a writer; size and fps are checked here so mistakes surface before any encoding.
    pub fn create(path: impl AsRef<Path>, width: u32, height: u32, fps: f64) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        check_size(width as u64, height as u64)?;
        check_fps(fps)?;
        let sink = match OutputKind::from_path(&path)? {
            OutputKind::Mp4 => Sink::Mp4 {
                mp4: Box::new(Mp4Sink::new(width, height, fps)?),
                tmp: temp_beside(&path)?,
            },
            OutputKind::Gif => {
                if width > u16::MAX as u32 || height > u16::MAX as u32 {
                    return Err(MediaError::InvalidSize {
                        width: width as u64,
                        height: height as u64,
                    });
                }
                let tmp = temp_beside(&path)?;
                let mut enc =
                    gif::Encoder::new(BufWriter::new(tmp), width as u16, height as u16, &[])
                        .map_err(|e| gif_err(&path, e))?;
                enc.set_repeat(gif::Repeat::Infinite)
                    .map_err(|e| gif_err(&path, e))?;
                Sink::Gif {
                    enc,
                    fps,
                    pixels: Default::default(),
                    provenance: None,
                }
            }
            OutputKind::Png => Sink::Png {
                tmp: temp_beside(&path)?,
                rgb: None,
                provenance: None,
            },
            OutputKind::PngFolder => {
                let dir = parent_dir(&path);
                let tmp = tempfile::Builder::new()
                    .prefix(".tessera-frames-")
                    .tempdir_in(dir)
                    .map_err(|e| MediaError::io(dir, "creating a temporary directory in", e))?;
                Sink::Folder { tmp }
            }
        };
        Ok(Self {
            path,
            width,
            height,
            frames: 0,
            sink,
        })
    }

    /// Provenance to store with the video, bound to the picture data by SHA-256
    /// ([`crate::read_provenance`]): MP4 files carry `manifest` in a `uuid` box, PNG images in
    /// text chunks, GIFs in an application extension; frame folders ignore it.
    pub fn set_provenance(&mut self, manifest: Vec<u8>) {
        match &mut self.sink {
            Sink::Mp4 { mp4, .. } => mp4.provenance = Some(manifest),
            Sink::Png { provenance, .. } | Sink::Gif { provenance, .. } => {
                *provenance = Some(manifest)
            }
            Sink::Folder { .. } => {}
        }
    }

    /// SHA-256 (hex) of the picture data as it will be bound to provenance: the coded samples
    /// of an MP4, the pixels of a PNG, the decoded pixels of every GIF frame. Complete once
    /// every frame is pushed, so a manifest can name (and a signature cover) it before
    /// [`VideoWriter::finish`]. `None` for frame folders.
    pub fn content_sha256(&self) -> Option<String> {
        use sha2::Digest;
        match &self.sink {
            Sink::Mp4 { mp4, .. } => Some(sha256_hex(&mp4.payload)),
            Sink::Png { rgb, .. } => rgb.as_deref().map(sha256_hex),
            Sink::Gif { pixels, .. } => Some(hex(&pixels.clone().finalize())),
            Sink::Folder { .. } => None,
        }
    }

    /// Frames pushed so far.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Adds one RGB8 frame of `width * height * 3` bytes.
    pub fn push_frame(&mut self, rgb: &[u8]) -> Result<()> {
        let expected = self.width as usize * self.height as usize * 3;
        if rgb.len() != expected {
            return Err(MediaError::FrameSize {
                index: self.frames,
                width: self.width,
                height: self.height,
                expected,
                got: rgb.len(),
            });
        }
        let index = self.frames;
        match &mut self.sink {
            Sink::Mp4 { mp4, .. } => mp4.push(rgb, index)?,
            Sink::Gif {
                enc, fps, pixels, ..
            } => {
                let mut frame =
                    gif::Frame::from_rgb_speed(self.width as u16, self.height as u16, rgb, 10);
                if let Some(palette) = &frame.palette {
                    use sha2::Digest;
                    for &i in frame.buffer.iter() {
                        pixels.update(&palette[i as usize * 3..i as usize * 3 + 3]);
                    }
                }
                // Delays are in 1/100 s; rounding the running total keeps long GIFs in sync.
                let t = |i: usize| (i as f64 * 100.0 / *fps).round() as i64;
                frame.delay = (t(index + 1) - t(index)).clamp(1, u16::MAX as i64) as u16;
                enc.write_frame(&frame)
                    .map_err(|e| gif_err(&self.path, e))?;
            }
            Sink::Png { rgb: frame, .. } => {
                if index > 0 {
                    return Err(MediaError::PngMultiFrame {
                        path: self.path.clone(),
                        frames: index + 1,
                    });
                }
                *frame = Some(rgb.to_vec());
            }
            Sink::Folder { tmp } => {
                let file = tmp.path().join(format!("frame_{index:05}.png"));
                let mut f =
                    File::create(&file).map_err(|e| MediaError::io(&file, "creating", e))?;
                write_png(&mut f, &file, rgb, self.width, self.height, None)?;
            }
        }
        self.frames += 1;
        Ok(())
    }

    /// Completes the file and renames it into place.
    pub fn finish(self) -> Result<()> {
        if self.frames == 0 {
            return Err(MediaError::NoFrames);
        }
        let path = self.path;
        let tmp = match self.sink {
            Sink::Mp4 { mp4, mut tmp } => {
                mp4.write_to(tmp.as_file_mut(), &path)?;
                tmp
            }
            Sink::Gif {
                mut enc,
                pixels,
                provenance,
                ..
            } => {
                if let Some(manifest) = provenance {
                    use sha2::Digest;
                    let hash = hex(&pixels.finalize());
                    enc.write_raw_extension(
                        gif::Extension::Application.into(),
                        &[GIF_PROVENANCE_APP, hash.as_bytes(), b"\n", &manifest],
                    )
                    .map_err(|e| gif_err(&path, e))?;
                }
                let buf = enc.into_inner().map_err(|e| gif_err(&path, e))?;
                buf.into_inner()
                    .map_err(|e| MediaError::io(&path, "writing", e.into_error()))?
            }
            Sink::Png {
                mut tmp,
                rgb,
                provenance,
            } => {
                let rgb = rgb.ok_or(MediaError::NoFrames)?;
                let at = tmp.path().to_path_buf();
                write_png(
                    tmp.as_file_mut(),
                    &at,
                    &rgb,
                    self.width,
                    self.height,
                    provenance.as_deref(),
                )?;
                tmp
            }
            Sink::Folder { tmp } => return finish_folder(tmp, &path),
        };
        tmp.as_file()
            .sync_all()
            .map_err(|e| MediaError::io(&path, "flushing", e))?;
        tmp.persist(&path)
            .map_err(|e| MediaError::io(&path, "renaming into place", e.error))?;
        Ok(())
    }
}

fn gif_err(path: &Path, e: gif::EncodingError) -> MediaError {
    match e {
        gif::EncodingError::Io(e) => MediaError::io(path, "writing", e),
        other => MediaError::Image {
            path: path.into(),
            detail: other.to_string(),
        },
    }
}

/// PNG text-chunk keywords of a provenance manifest and the SHA-256 (hex) of the RGB pixels
/// it was bound to.
pub(crate) const PNG_MANIFEST_KEY: &str = "tessera:manifest";
pub(crate) const PNG_HASH_KEY: &str = "tessera:sha256";

fn write_png(
    out: &mut File,
    path: &Path,
    rgb: &[u8],
    w: u32,
    h: u32,
    provenance: Option<&[u8]>,
) -> Result<()> {
    let err = |e: png::EncodingError| MediaError::Image {
        path: path.into(),
        detail: e.to_string(),
    };
    let mut enc = png::Encoder::new(BufWriter::new(out), w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    if let Some(manifest) = provenance {
        enc.add_itxt_chunk(
            PNG_MANIFEST_KEY.into(),
            String::from_utf8_lossy(manifest).into_owned(),
        )
        .map_err(err)?;
        enc.add_text_chunk(PNG_HASH_KEY.into(), sha256_hex(rgb))
            .map_err(err)?;
    }
    let mut writer = enc.write_header().map_err(err)?;
    writer.write_image_data(rgb).map_err(err)?;
    writer.finish().map_err(err)
}

/// Application identifier and code of a GIF's provenance extension, after the last frame:
/// then the pixels' SHA-256 (hex), a newline and the manifest.
pub(crate) const GIF_PROVENANCE_APP: &[u8; 11] = b"TESSERA1PRV";

/// SHA-256 of `data` as lower-case hex.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(data))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Moves the finished frames into place: a rename of the whole directory when the target does
/// not exist, otherwise one rename per frame into the existing directory.
fn finish_folder(tmp: TempDir, path: &Path) -> Result<()> {
    if !path.exists() {
        let staged = tmp.keep();
        return std::fs::rename(&staged, path).map_err(|e| {
            let _ = std::fs::remove_dir_all(&staged);
            MediaError::io(path, "renaming the frame directory into place", e)
        });
    }
    let entries =
        std::fs::read_dir(tmp.path()).map_err(|e| MediaError::io(tmp.path(), "listing", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| MediaError::io(tmp.path(), "listing", e))?;
        let target = path.join(entry.file_name());
        std::fs::rename(entry.path(), &target)
            .map_err(|e| MediaError::io(&target, "renaming a frame into place", e))?;
    }
    Ok(())
}

/// Encodes frames as they arrive, keeping only the compressed samples.
struct Mp4Sink {
    enc: H264Encoder,
    width: u32,
    height: u32,
    timescale: u32,
    delta: u32,
    samples: Vec<MuxSample>,
    payload: Vec<u8>,
    /// Manifest for a provenance box after `mdat`.
    provenance: Option<Vec<u8>>,
}

impl Mp4Sink {
    fn new(width: u32, height: u32, fps: f64) -> Result<Self> {
        check_size(width as u64, height as u64)?;
        check_fps(fps)?;
        if width % 2 == 1 || height % 2 == 1 {
            return Err(MediaError::OddSize {
                width,
                height,
                even_w: width + width % 2,
                even_h: height + height % 2,
            });
        }
        if width.max(height) > MAX_ENCODE_LONG_SIDE || width.min(height) > MAX_ENCODE_SHORT_SIDE {
            return Err(MediaError::Encode {
                frame: 0,
                detail: format!(
                    "{width}x{height} is over the H.264 encoder's limit of {MAX_ENCODE_LONG_SIDE}x{MAX_ENCODE_SHORT_SIDE}; resize first"
                ),
            });
        }
        let enc = H264Encoder::new(width, height, fps)
            .map_err(|detail| MediaError::Encode { frame: 0, detail })?;
        let (timescale, delta) = timescale_for(fps);
        Ok(Self {
            enc,
            width,
            height,
            timescale,
            delta,
            samples: Vec::new(),
            payload: Vec::new(),
            provenance: None,
        })
    }

    fn push(&mut self, rgb: &[u8], frame: usize) -> Result<()> {
        let sample = self
            .enc
            .encode(rgb)
            .map_err(|detail| MediaError::Encode { frame, detail })?;
        match sample {
            Some(s) => {
                self.payload.extend_from_slice(&s.data);
                self.samples.push(MuxSample {
                    size: s.data.len() as u32,
                    duration: self.delta,
                    sync: s.sync,
                });
            }
            // A skipped frame shows the previous picture for longer.
            None => match self.samples.last_mut() {
                Some(last) => last.duration += self.delta,
                None => {
                    return Err(MediaError::Encode {
                        frame,
                        detail: "the encoder produced no picture for the first frame".into(),
                    })
                }
            },
        }
        Ok(())
    }

    fn header(&self) -> Result<Vec<u8>> {
        let (Some(sps), Some(pps)) = (&self.enc.sps, &self.enc.pps) else {
            return Err(MediaError::Encode {
                frame: 0,
                detail: "the encoder emitted no SPS/PPS".into(),
            });
        };
        let track = MuxTrack {
            width: self.width,
            height: self.height,
            timescale: self.timescale,
            sps,
            pps,
            samples: &self.samples,
        };
        Ok(write_header(&track, self.payload.len() as u64))
    }

    fn trailer(&self) -> Vec<u8> {
        self.provenance
            .as_ref()
            .map(|m| provenance_box(&self.payload, m))
            .unwrap_or_default()
    }

    fn write_to(self, file: &mut File, path: &Path) -> Result<()> {
        let header = self.header()?;
        let mut w = BufWriter::new(file);
        w.write_all(&header)
            .and_then(|_| w.write_all(&self.payload))
            .and_then(|_| w.write_all(&self.trailer()))
            .and_then(|_| w.flush())
            .map_err(|e| MediaError::io(path, "writing", e))
    }

    fn into_bytes(self) -> Result<Vec<u8>> {
        let mut out = self.header()?;
        out.extend_from_slice(&self.payload);
        out.extend_from_slice(&self.trailer());
        Ok(out)
    }
}

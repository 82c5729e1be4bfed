//! H.264 through openh264 (built from source, no system library): SPS parsing, an encoder that
//! emits MP4-ready (length-prefixed) samples, and a decoder that returns RGB frames.
//!
//! openh264 supports Baseline/Main/High 8-bit 4:2:0 progressive streams, CABAC and B-slices
//! included; we check the SPS first and reject what it cannot decode (10-bit, 4:2:2/4:4:4,
//! interlaced) with `UnsupportedCodec`, and bound the frame size before the decoder allocates.

use std::panic::{catch_unwind, AssertUnwindSafe};

use openh264::decoder::{DecodeOptions, Decoder, DecoderConfig, Flush};
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, QpRange,
    RateControlMode, UsageType, VuiConfig,
};
use openh264::formats::{YUVSlices, YUVSource};
use openh264::OpenH264API;

use crate::color::{i420_to_rgb, rgb_to_i420, ColorSpace, Matrix, Planes, Upsampling};
use crate::video::check_size;

/// openh264's encoder stops at level 5.2: 3840x2160 landscape or 2160x3840 portrait.
pub const MAX_ENCODE_LONG_SIDE: u32 = 3840;
pub const MAX_ENCODE_SHORT_SIDE: u32 = 2160;

// ---------------------------------------------------------------------------------------------
// SPS
// ---------------------------------------------------------------------------------------------

/// What we need from a sequence parameter set.
#[derive(Debug, Clone, PartialEq)]
pub struct SpsInfo {
    pub profile_idc: u8,
    /// Visible size after frame cropping.
    pub width: u32,
    pub height: u32,
    /// Crop offsets from the top-left of the coded picture, in luma pixels.
    pub crop_left: u32,
    pub crop_top: u32,
    pub color: ColorSpace,
}

/// Why an SPS was rejected: either malformed, or valid but beyond openh264.
#[derive(Debug, PartialEq)]
pub enum SpsError {
    Malformed(String),
    Unsupported(String),
}

struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn bit(&mut self) -> Result<u32, SpsError> {
        let byte = self
            .data
            .get(self.pos / 8)
            .ok_or_else(|| SpsError::Malformed("SPS ends early".into()))?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Ok(b as u32)
    }

    fn bits(&mut self, n: u32) -> Result<u32, SpsError> {
        let mut v = 0;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Ok(v)
    }

    fn ue(&mut self) -> Result<u32, SpsError> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return Err(SpsError::Malformed("Exp-Golomb code too long".into()));
            }
        }
        let rest = self.bits(zeros)? as u64;
        let v = (1u64 << zeros) - 1 + rest;
        u32::try_from(v).map_err(|_| SpsError::Malformed("Exp-Golomb value overflows".into()))
    }

    fn se(&mut self) -> Result<i32, SpsError> {
        let k = self.ue()? as i64;
        Ok(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) } as i32)
    }
}

/// Removes emulation-prevention bytes (`00 00 03` -> `00 00`).
fn unescape(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// Parses an SPS NAL unit (header byte included), per ITU-T H.264 7.3.2.1.1 and E.1.1.
pub fn parse_sps(nal: &[u8]) -> Result<SpsInfo, SpsError> {
    if nal.first().map(|b| b & 0x1f) != Some(7) {
        return Err(SpsError::Malformed("not an SPS NAL unit".into()));
    }
    let rbsp = unescape(&nal[1..]);
    let mut r = BitReader {
        data: &rbsp,
        pos: 0,
    };
    let profile_idc = r.bits(8)? as u8;
    r.bits(16)?; // constraint flags, level
    r.ue()?; // sps id
    let mut chroma_format_idc = 1;
    if [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135].contains(&profile_idc) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc == 3 {
            r.bit()?;
        }
        let luma_depth = r.ue()? + 8;
        let chroma_depth = r.ue()? + 8;
        if luma_depth != 8 || chroma_depth != 8 {
            return Err(SpsError::Unsupported(format!(
                "H.264 {luma_depth}-bit (only 8-bit is decoded natively)"
            )));
        }
        r.bit()?; // qpprime_y_zero_transform_bypass
        if r.bit()? == 1 {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i32, 8i32);
                    for _ in 0..size {
                        if next != 0 {
                            next = (last + r.se()? + 256).rem_euclid(256);
                        }
                        if next != 0 {
                            last = next;
                        }
                    }
                }
            }
        }
    }
    if chroma_format_idc != 1 {
        let name = match chroma_format_idc {
            0 => "monochrome",
            2 => "4:2:2",
            _ => "4:4:4",
        };
        return Err(SpsError::Unsupported(format!(
            "H.264 {name} (only 4:2:0 is decoded natively)"
        )));
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?;
        }
        1 => {
            r.bit()?;
            r.se()?;
            r.se()?;
            let n = r.ue()?;
            if n > 255 {
                return Err(SpsError::Malformed("POC cycle longer than 255".into()));
            }
            for _ in 0..n {
                r.se()?;
            }
        }
        2 => {}
        t => return Err(SpsError::Malformed(format!("pic_order_cnt_type {t}"))),
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_allowed
    let mbs_w = r.ue()? as u64 + 1;
    let map_units_h = r.ue()? as u64 + 1;
    let frame_mbs_only = r.bit()? == 1;
    if !frame_mbs_only {
        return Err(SpsError::Unsupported(
            "interlaced H.264 (only progressive is decoded natively)".into(),
        ));
    }
    r.bit()?; // direct_8x8_inference
    let coded_w = mbs_w * 16;
    let coded_h = map_units_h * 16;
    let (mut cl, mut cr, mut ct, mut cb) = (0u64, 0u64, 0u64, 0u64);
    if r.bit()? == 1 {
        // 4:2:0 progressive: crop units are 2 luma pixels each way.
        cl = r.ue()? as u64 * 2;
        cr = r.ue()? as u64 * 2;
        ct = r.ue()? as u64 * 2;
        cb = r.ue()? as u64 * 2;
    }
    if cl + cr >= coded_w || ct + cb >= coded_h {
        return Err(SpsError::Malformed(
            "frame cropping removes the whole picture".into(),
        ));
    }
    let (width, height) = (coded_w - cl - cr, coded_h - ct - cb);
    check_size(width, height).map_err(|_| {
        SpsError::Unsupported(format!(
            "H.264 frame size {width}x{height} (over the size limit)"
        ))
    })?;
    let mut color = ColorSpace::default();
    // VUI is optional and trailing; a stream cut inside it still decodes, so errors here only
    // leave the default colour space.
    let _ = parse_vui_color(&mut r, &mut color);
    Ok(SpsInfo {
        profile_idc,
        width: width as u32,
        height: height as u32,
        crop_left: cl as u32,
        crop_top: ct as u32,
        color,
    })
}

fn parse_vui_color(r: &mut BitReader, color: &mut ColorSpace) -> Result<(), SpsError> {
    if r.bit()? == 0 {
        return Ok(());
    }
    if r.bit()? == 1 && r.bits(8)? == 255 {
        r.bits(32)?; // sar width, height
    }
    if r.bit()? == 1 {
        r.bit()?; // overscan_appropriate
    }
    if r.bit()? == 1 {
        r.bits(3)?; // video_format
        color.full_range = r.bit()? == 1;
        if r.bit()? == 1 {
            r.bits(16)?; // primaries, transfer
            color.matrix = match r.bits(8)? {
                1 => Matrix::Bt709,
                _ => Matrix::Bt601,
            };
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Annex B <-> length-prefixed NAL units
// ---------------------------------------------------------------------------------------------

/// Strips a leading Annex B start code (`00 00 01` or `00 00 00 01`).
fn strip_start_code(nal: &[u8]) -> &[u8] {
    if nal.starts_with(&[0, 0, 0, 1]) {
        &nal[4..]
    } else if nal.starts_with(&[0, 0, 1]) {
        &nal[3..]
    } else {
        nal
    }
}

/// Splits a length-prefixed (MP4) sample into NAL units; `None` if a length overruns it.
pub fn split_length_prefixed(sample: &[u8], length_size: usize) -> Option<Vec<&[u8]>> {
    let mut nals = Vec::new();
    let mut rest = sample;
    while !rest.is_empty() {
        if rest.len() < length_size {
            return None;
        }
        let len = rest[..length_size]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        rest = &rest[length_size..];
        if len > rest.len() {
            return None;
        }
        nals.push(&rest[..len]);
        rest = &rest[len..];
    }
    Some(nals)
}

// ---------------------------------------------------------------------------------------------
// Encoder
// ---------------------------------------------------------------------------------------------

/// One encoded frame in MP4 form: 4-byte big-endian lengths before each NAL unit.
pub struct EncodedSample {
    pub data: Vec<u8>,
    pub sync: bool,
}

pub struct H264Encoder {
    enc: Encoder,
    width: usize,
    height: usize,
    pub sps: Option<Vec<u8>>,
    pub pps: Option<Vec<u8>>,
}

impl H264Encoder {
    /// `width`/`height` must be even and within the encoder limits (checked by the caller).
    pub fn new(width: u32, height: u32, fps: f64) -> Result<Self, String> {
        let pixels_per_sec = width as f64 * height as f64 * fps;
        // About 1 bit per pixel before the QP cap bites: enough that the cap, not the rate
        // controller, sets quality on our small clips (>= 35 dB PSNR on shapes-world video).
        let bps = pixels_per_sec.clamp(200_000.0, 200_000_000.0) as u32;
        // An IDR every ~2 s so players can seek without decoding from the start.
        let gop = ((fps * 2.0).round() as u32).max(1);
        let config = EncoderConfig::new()
            .usage_type(UsageType::CameraVideoRealTime)
            .rate_control_mode(RateControlMode::Bufferbased)
            .bitrate(BitRate::from_bps(bps))
            .max_frame_rate(FrameRate::from_hz(fps as f32))
            // Every input frame must become a sample (frame counts are part of our contract).
            // Buffer-based rate control: the quality/bitrate modes print a warning to stderr for
            // every encoder when frame skipping is off (~0.6 dB better at 64x64); RC off gave
            // 31 dB instead of 35.5.
            .skip_frames(false)
            .qp(QpRange::new(0, 26))
            .complexity(Complexity::High)
            // Background detection skips "static" macroblocks and left moving shapes smeared
            // (P frames fell to 26 dB against the encoder's own input); off, they stay ~43 dB.
            .background_detection(false)
            .intra_frame_period(IntraFramePeriod::from_num_frames(gop))
            .vui(VuiConfig::bt601())
            // One thread keeps output byte-identical across runs (same seed -> same file).
            .num_threads(1);
        let enc = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| e.to_string())?;
        Ok(Self {
            enc,
            width: width as usize,
            height: height as usize,
            sps: None,
            pps: None,
        })
    }

    /// Encodes one RGB8 frame. `None` when the encoder skipped the frame (no picture data).
    pub fn encode(&mut self, rgb: &[u8]) -> Result<Option<EncodedSample>, String> {
        let yuv = rgb_to_i420(rgb, self.width, self.height);
        let (cw, _) = crate::color::I420::chroma_dims(self.width, self.height);
        let src = YUVSlices::new(
            (&yuv.y, &yuv.u, &yuv.v),
            (self.width, self.height),
            (self.width, cw, cw),
        );
        let bs = self.enc.encode(&src).map_err(|e| e.to_string())?;
        if matches!(bs.frame_type(), FrameType::Skip | FrameType::Invalid) {
            return Ok(None);
        }
        let mut data = Vec::new();
        let mut sync = false;
        for l in 0..bs.num_layers() {
            let Some(layer) = bs.layer(l) else { continue };
            for n in 0..layer.nal_count() {
                let Some(nal) = layer.nal_unit(n) else {
                    continue;
                };
                let nal = strip_start_code(nal);
                let Some(&header) = nal.first() else { continue };
                match header & 0x1f {
                    7 => {
                        self.sps.get_or_insert_with(|| nal.to_vec());
                    }
                    8 => {
                        self.pps.get_or_insert_with(|| nal.to_vec());
                    }
                    9 | 12 => {} // access unit delimiter, filler
                    t => {
                        sync |= t == 5;
                        data.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                        data.extend_from_slice(nal);
                    }
                }
            }
        }
        if data.is_empty() {
            return Ok(None);
        }
        Ok(Some(EncodedSample { data, sync }))
    }
}

// ---------------------------------------------------------------------------------------------
// Decoder
// ---------------------------------------------------------------------------------------------

pub struct H264Decoder {
    dec: Decoder,
    sps: Option<SpsInfo>,
    upsampling: Upsampling,
}

impl H264Decoder {
    pub fn new() -> Result<Self, String> {
        // No flush after each access unit: B-frame streams need the reorder buffer; the caller
        // drains it with `finish`.
        let config = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
        let dec = Decoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| e.to_string())?;
        Ok(Self {
            dec,
            sps: None,
            upsampling: Upsampling::Replicate,
        })
    }

    /// Chroma upsampling for output frames (see [`Upsampling`] for which to pick).
    pub fn set_upsampling(&mut self, upsampling: Upsampling) {
        self.upsampling = upsampling;
    }

    /// Records the stream's SPS so output frames are cropped and colour-converted correctly.
    pub fn set_sps(&mut self, sps: SpsInfo) {
        self.sps = Some(sps);
    }

    /// Decodes one Annex B access unit; returns the RGB frame it completes, if any.
    pub fn decode(&mut self, annexb: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let sps = self.sps.clone();
        let up = self.upsampling;
        let dec = &mut self.dec;
        let result = catch_unwind(AssertUnwindSafe(|| {
            match dec.decode_with_options(
                annexb,
                DecodeOptions::new().flush_after_decode(Flush::NoFlush),
            ) {
                Ok(Some(yuv)) => to_rgb(&yuv, sps.as_ref(), up).map(Some),
                Ok(None) => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        }));
        result.unwrap_or_else(|_| Err("the H.264 decoder panicked".into()))
    }

    /// Drains frames still held for reordering at the end of the stream.
    pub fn finish(&mut self) -> Result<Vec<Vec<u8>>, String> {
        let sps = self.sps.clone();
        let up = self.upsampling;
        let dec = &mut self.dec;
        let result = catch_unwind(AssertUnwindSafe(|| {
            let frames = dec.flush_remaining().map_err(|e| e.to_string())?;
            frames.iter().map(|f| to_rgb(f, sps.as_ref(), up)).collect()
        }));
        result.unwrap_or_else(|_| Err("the H.264 decoder panicked".into()))
    }
}

/// Converts a decoded picture to RGB, cropping to the SPS's visible size when the decoder hands
/// out the macroblock-aligned picture.
fn to_rgb(yuv: &impl YUVSource, sps: Option<&SpsInfo>, up: Upsampling) -> Result<Vec<u8>, String> {
    let (dw, dh) = yuv.dimensions();
    let (ys, us, vs) = yuv.strides();
    let (w, h, left, top, color) = match sps {
        Some(s) if (s.width as usize) <= dw && (s.height as usize) <= dh => {
            let crop = (s.width as usize) < dw || (s.height as usize) < dh;
            let (l, t) = if crop {
                (s.crop_left as usize, s.crop_top as usize)
            } else {
                (0, 0)
            };
            (s.width as usize, s.height as usize, l, t, s.color)
        }
        Some(s) => (dw, dh, 0, 0, s.color),
        None => (dw, dh, 0, 0, ColorSpace::default()),
    };
    check_size(w as u64, h as u64).map_err(|e| e.to_string())?;
    let (cw, ch) = crate::color::I420::chroma_dims(w, h);
    let (cl, ct) = (left / 2, top / 2);
    let fits = |plane: &[u8], stride: usize, x0: usize, y0: usize, pw: usize, ph: usize| {
        stride >= x0 + pw && plane.len() >= (y0 + ph - 1) * stride + x0 + pw
    };
    if us != vs
        || left + w > dw
        || top + h > dh
        || !fits(yuv.y(), ys, left, top, w, h)
        || !fits(yuv.u(), us, cl, ct, cw, ch)
        || !fits(yuv.v(), vs, cl, ct, cw, ch)
    {
        return Err(format!(
            "decoded picture {dw}x{dh} (strides {ys}/{us}/{vs}) does not hold a {w}x{h} frame"
        ));
    }
    let planes = Planes {
        y: &yuv.y()[top * ys + left..],
        u: &yuv.u()[ct * us + cl..],
        v: &yuv.v()[ct * vs + cl..],
        y_stride: ys,
        uv_stride: us,
    };
    let mut out = vec![0u8; w * h * 3];
    i420_to_rgb(&planes, w, h, color, up, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb_and_unescape() {
        // 1 -> 0, 010 -> 1, 011 -> 2, 00100 -> 3
        let data = [0b1010_0110, 0b0100_0000];
        let mut r = BitReader {
            data: &data,
            pos: 0,
        };
        assert_eq!(
            (
                r.ue().unwrap(),
                r.ue().unwrap(),
                r.ue().unwrap(),
                r.ue().unwrap()
            ),
            (0, 1, 2, 3)
        );
        assert_eq!(unescape(&[0, 0, 3, 1, 0, 0, 3]), vec![0, 0, 1, 0, 0]);
        let mut r = BitReader { data: &[0], pos: 0 };
        assert!(matches!(r.ue(), Err(SpsError::Malformed(_))));
    }

    #[test]
    fn length_prefixed_split_checks_bounds() {
        let s = [0, 0, 0, 2, 0x65, 1, 0, 0, 0, 1, 0x41];
        assert_eq!(
            split_length_prefixed(&s, 4).unwrap(),
            vec![&[0x65, 1][..], &[0x41][..]]
        );
        assert!(split_length_prefixed(&s[..10], 4).is_none());
        assert!(split_length_prefixed(&[0, 0, 0, 9, 1], 4).is_none());
    }

    #[test]
    fn encoder_sps_parses_back() {
        let mut enc = H264Encoder::new(98, 54, 16.0).unwrap();
        let frame = vec![128u8; 98 * 54 * 3];
        let s = enc.encode(&frame).unwrap().unwrap();
        assert!(s.sync);
        let sps = parse_sps(enc.sps.as_ref().unwrap()).unwrap();
        assert_eq!((sps.width, sps.height), (98, 54));
        assert_eq!(sps.color, ColorSpace::default());
    }
}

//! A small ISO-BMFF (MP4/MOV) muxer and demuxer for one H.264 video track.
//!
//! Written here rather than taken from a crate because both directions must be hardened against
//! hostile input the same way: every count and size read from a header is checked against the
//! bytes actually present before anything is allocated, and nothing indexes unchecked. The
//! muxer writes "faststart" files (ftyp, moov, then mdat) with all samples in one chunk. The
//! demuxer reads plain and fragmented (moof/trun) files, avc1/avc3 sample entries, ctts
//! (B-frames) and 64-bit boxes/offsets. Spec: ISO/IEC 14496-12 and 14496-15.

use std::ops::Range;

// ---------------------------------------------------------------------------------------------
// Muxer
// ---------------------------------------------------------------------------------------------

/// Compressor name we put in the `avc1` sample entry; the reader uses it to know the chroma
/// was downsampled by our 2x2 mean (see `color::Upsampling`).
pub const COMPRESSOR_NAME: &str = "tessera openh264";

/// One sample of the track being written.
#[derive(Debug, Clone, Copy)]
pub struct MuxSample {
    pub size: u32,
    /// In track timescale units.
    pub duration: u32,
    pub sync: bool,
}

/// Everything the `moov` box describes.
pub struct MuxTrack<'a> {
    pub width: u32,
    pub height: u32,
    pub timescale: u32,
    pub sps: &'a [u8],
    pub pps: &'a [u8],
    pub samples: &'a [MuxSample],
}

/// Timescale and per-frame duration for a frame rate: fps to 1/1000 precision, exact for
/// integers and the 1000/1001 NTSC rates.
pub fn timescale_for(fps: f64) -> (u32, u32) {
    let ntsc = fps * 1.001;
    if (ntsc - ntsc.round()).abs() < 1e-3 && (fps - fps.round()).abs() > 1e-3 {
        ((ntsc.round() as u32) * 1000, 1001)
    } else {
        ((fps * 1000.0).round().max(1.0) as u32, 1000)
    }
}

fn push_box(out: &mut Vec<u8>, kind: &[u8; 4], body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(kind);
    body(out);
    let size = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

fn push_full_box(out: &mut Vec<u8>, kind: &[u8; 4], flags: u32, body: impl FnOnce(&mut Vec<u8>)) {
    push_box(out, kind, |o| {
        o.extend_from_slice(&flags.to_be_bytes()); // version 0 + 24-bit flags
        body(o);
    });
}

fn u16be(o: &mut Vec<u8>, v: u16) {
    o.extend_from_slice(&v.to_be_bytes());
}
fn u32be(o: &mut Vec<u8>, v: u32) {
    o.extend_from_slice(&v.to_be_bytes());
}

const UNITY_MATRIX: [u32; 9] = [0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x4000_0000];

/// `ftyp` + `moov` for `track`, its single chunk starting right after the `mdat` header.
/// Returns the header bytes; the caller appends the `mdat` header (`mdat_header`) and payload.
pub fn write_header(track: &MuxTrack, payload_len: u64) -> Vec<u8> {
    let mut ftyp = Vec::new();
    push_box(&mut ftyp, b"ftyp", |o| {
        o.extend_from_slice(b"isom");
        u32be(o, 0x200);
        for brand in [b"isom", b"iso2", b"avc1", b"mp41"] {
            o.extend_from_slice(brand);
        }
    });
    // The chunk offset depends on moov's size, which does not depend on the offset's value.
    let moov_len = build_moov(track, 0).len();
    let offset = (ftyp.len() + moov_len + mdat_header(payload_len).len()) as u32;
    let mut out = ftyp;
    out.extend_from_slice(&build_moov(track, offset));
    out.extend_from_slice(&mdat_header(payload_len));
    out
}

/// `mdat` box header; 64-bit size past 4 GiB.
pub fn mdat_header(payload_len: u64) -> Vec<u8> {
    let mut h = Vec::new();
    if payload_len + 8 <= u32::MAX as u64 {
        u32be(&mut h, (payload_len + 8) as u32);
        h.extend_from_slice(b"mdat");
    } else {
        u32be(&mut h, 1);
        h.extend_from_slice(b"mdat");
        h.extend_from_slice(&(payload_len + 16).to_be_bytes());
    }
    h
}

fn build_moov(t: &MuxTrack, chunk_offset: u32) -> Vec<u8> {
    let media_duration: u64 = t.samples.iter().map(|s| s.duration as u64).sum();
    let movie_duration = media_duration * 1000 / t.timescale.max(1) as u64;
    let mut out = Vec::new();
    push_box(&mut out, b"moov", |o| {
        push_full_box(o, b"mvhd", 0, |o| {
            u32be(o, 0);
            u32be(o, 0);
            u32be(o, 1000);
            u32be(o, movie_duration as u32);
            u32be(o, 0x0001_0000); // rate 1.0
            u16be(o, 0x0100); // volume 1.0
            o.extend_from_slice(&[0; 10]);
            UNITY_MATRIX.iter().for_each(|&m| u32be(o, m));
            o.extend_from_slice(&[0; 24]);
            u32be(o, 2); // next track id
        });
        push_box(o, b"trak", |o| {
            push_full_box(o, b"tkhd", 3, |o| {
                u32be(o, 0);
                u32be(o, 0);
                u32be(o, 1); // track id
                u32be(o, 0);
                u32be(o, movie_duration as u32);
                o.extend_from_slice(&[0; 8]);
                u16be(o, 0); // layer
                u16be(o, 0); // alternate group
                u16be(o, 0); // volume
                u16be(o, 0);
                UNITY_MATRIX.iter().for_each(|&m| u32be(o, m));
                u32be(o, t.width << 16);
                u32be(o, t.height << 16);
            });
            push_box(o, b"mdia", |o| {
                push_full_box(o, b"mdhd", 0, |o| {
                    u32be(o, 0);
                    u32be(o, 0);
                    u32be(o, t.timescale);
                    u32be(o, media_duration as u32);
                    u16be(o, 0x55c4); // "und"
                    u16be(o, 0);
                });
                push_full_box(o, b"hdlr", 0, |o| {
                    u32be(o, 0);
                    o.extend_from_slice(b"vide");
                    o.extend_from_slice(&[0; 12]);
                    o.extend_from_slice(b"VideoHandler\0");
                });
                push_box(o, b"minf", |o| {
                    push_full_box(o, b"vmhd", 1, |o| o.extend_from_slice(&[0; 8]));
                    push_box(o, b"dinf", |o| {
                        push_full_box(o, b"dref", 0, |o| {
                            u32be(o, 1);
                            push_full_box(o, b"url ", 1, |_| {});
                        });
                    });
                    push_box(o, b"stbl", |o| write_stbl(o, t, chunk_offset));
                });
            });
        });
    });
    out
}

fn write_stbl(o: &mut Vec<u8>, t: &MuxTrack, chunk_offset: u32) {
    push_full_box(o, b"stsd", 0, |o| {
        u32be(o, 1);
        push_box(o, b"avc1", |o| {
            o.extend_from_slice(&[0; 6]);
            u16be(o, 1); // data reference index
            o.extend_from_slice(&[0; 16]);
            u16be(o, t.width as u16);
            u16be(o, t.height as u16);
            u32be(o, 0x0048_0000); // 72 dpi
            u32be(o, 0x0048_0000);
            u32be(o, 0);
            u16be(o, 1); // frames per sample
            let mut name = [0u8; 32];
            let label = COMPRESSOR_NAME.as_bytes();
            name[0] = label.len() as u8;
            name[1..=label.len()].copy_from_slice(label);
            o.extend_from_slice(&name);
            u16be(o, 0x18); // depth
            u16be(o, 0xffff); // pre_defined = -1
            push_box(o, b"avcC", |o| {
                let profile = t.sps.get(1..4).unwrap_or(&[66, 0, 30]);
                o.push(1);
                o.extend_from_slice(profile);
                o.push(0xff); // 4-byte NAL lengths
                o.push(0xe1); // one SPS
                u16be(o, t.sps.len() as u16);
                o.extend_from_slice(t.sps);
                o.push(1); // one PPS
                u16be(o, t.pps.len() as u16);
                o.extend_from_slice(t.pps);
            });
        });
    });
    push_full_box(o, b"stts", 0, |o| {
        let mut runs: Vec<(u32, u32)> = Vec::new();
        for s in t.samples {
            match runs.last_mut() {
                Some((n, d)) if *d == s.duration => *n += 1,
                _ => runs.push((1, s.duration)),
            }
        }
        u32be(o, runs.len() as u32);
        for (n, d) in runs {
            u32be(o, n);
            u32be(o, d);
        }
    });
    if t.samples.iter().any(|s| !s.sync) {
        push_full_box(o, b"stss", 0, |o| {
            let sync: Vec<u32> = (1..=t.samples.len() as u32)
                .filter(|i| t.samples[*i as usize - 1].sync)
                .collect();
            u32be(o, sync.len() as u32);
            sync.iter().for_each(|&i| u32be(o, i));
        });
    }
    push_full_box(o, b"stsc", 0, |o| {
        u32be(o, 1);
        u32be(o, 1); // first chunk
        u32be(o, t.samples.len() as u32);
        u32be(o, 1);
    });
    push_full_box(o, b"stsz", 0, |o| {
        u32be(o, 0);
        u32be(o, t.samples.len() as u32);
        t.samples.iter().for_each(|s| u32be(o, s.size));
    });
    push_full_box(o, b"stco", 0, |o| {
        u32be(o, 1);
        u32be(o, chunk_offset);
    });
}

// ---------------------------------------------------------------------------------------------
// Demuxer
// ---------------------------------------------------------------------------------------------

/// Why a file could not be demuxed.
#[derive(Debug, PartialEq)]
pub enum DemuxError {
    Truncated(String),
    Corrupt(String),
    NoVideoTrack,
    /// The video track's sample entry, e.g. `hvc1 (H.265/HEVC)`.
    UnsupportedCodec(String),
}

/// One coded frame, in decode order.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub range: Range<usize>,
    pub dts: i64,
    /// Presentation time (dts + composition offset), in timescale units.
    pub pts: i64,
    pub duration: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    /// Size from the sample entry (the SPS is authoritative).
    pub width: u32,
    pub height: u32,
    pub timescale: u32,
    pub nal_length_size: usize,
    /// The sample entry's compressor name (empty when unset).
    pub compressor: String,
    pub sps: Vec<Vec<u8>>,
    pub pps: Vec<Vec<u8>>,
    pub samples: Vec<Sample>,
}

type DResult<T> = Result<T, DemuxError>;

fn corrupt<T>(msg: impl Into<String>) -> DResult<T> {
    Err(DemuxError::Corrupt(msg.into()))
}

/// Big-endian reader over a byte slice; every read is bounds-checked.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Cursor<'a> {
    fn new(data: &'a [u8], what: &'static str) -> Self {
        Self { data, pos: 0, what }
    }
    fn bytes(&mut self, n: usize) -> DResult<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(end) => {
                let s = &self.data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => corrupt(format!("'{}' box is shorter than its fields", self.what)),
        }
    }
    fn u8(&mut self) -> DResult<u8> {
        Ok(self.bytes(1)?[0])
    }
    fn u16(&mut self) -> DResult<u16> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> DResult<u32> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> DResult<u64> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
    /// Reads a table count and checks `count * entry_size` bytes are present before anyone
    /// allocates for it.
    fn count(&mut self, entry_size: usize) -> DResult<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(entry_size) > self.remaining() {
            return corrupt(format!(
                "'{}' declares {n} entries but holds {} bytes",
                self.what,
                self.remaining()
            ));
        }
        Ok(n)
    }
}

/// User type of Tessera's provenance `uuid` box (16 bytes).
pub const PROVENANCE_UUID: [u8; 16] = *b"tessera.manifest";

/// A top-level `uuid` box: [`PROVENANCE_UUID`], the SHA-256 of `mdat_payload`, then
/// `manifest`. Written after `mdat`, so no sample offset moves; players skip unknown boxes.
pub fn provenance_box(mdat_payload: &[u8], manifest: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let mut out = Vec::new();
    push_box(&mut out, b"uuid", |o| {
        o.extend_from_slice(&PROVENANCE_UUID);
        o.extend_from_slice(&sha2::Sha256::digest(mdat_payload));
        o.extend_from_slice(manifest);
    });
    out
}

/// The manifest of a provenance box in `data`, the hash (hex) it was bound to, and whether the
/// `mdat` is unchanged; `None` when the file has no such box.
pub fn find_provenance(data: &[u8]) -> DResult<Option<(Vec<u8>, String, bool)>> {
    let top = boxes(data, true)?;
    let Some(body) = top
        .iter()
        .map(|b| &data[b.payload.clone()])
        .zip(top.iter().map(|b| b.kind))
        .find(|(body, kind)| kind == b"uuid" && body.starts_with(&PROVENANCE_UUID))
        .map(|(body, _)| &body[PROVENANCE_UUID.len()..])
    else {
        return Ok(None);
    };
    if body.len() < 32 {
        return corrupt("provenance box shorter than its hash");
    }
    let mdat = find(data, &top, b"mdat").unwrap_or_default();
    let hash = crate::write::hex(&body[..32]);
    let intact = hash == crate::write::sha256_hex(mdat);
    Ok(Some((body[32..].to_vec(), hash, intact)))
}

/// A box: type, absolute start offset, and payload range within the parent slice.
struct BoxRef {
    kind: [u8; 4],
    start: usize,
    payload: Range<usize>,
}

/// Lists the boxes in `data`. `top_level` boxes that overrun the end mean truncation; inside a
/// parent they mean corruption.
fn boxes(data: &[u8], top_level: bool) -> DResult<Vec<BoxRef>> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let rest = data.len() - pos;
        if rest < 8 {
            if top_level {
                return Err(DemuxError::Truncated(format!(
                    "{rest} stray bytes at the end, too short for a box header"
                )));
            }
            return corrupt(format!("{rest} stray bytes inside a box"));
        }
        let size32 = u32::from_be_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]);
        let kind = [data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]];
        let (size, header) = match size32 {
            0 => (rest as u64, 8usize),
            1 => {
                if rest < 16 {
                    return Err(DemuxError::Truncated("64-bit box header cut short".into()));
                }
                let mut a = [0u8; 8];
                a.copy_from_slice(&data[pos + 8..pos + 16]);
                (u64::from_be_bytes(a), 16)
            }
            s => (s as u64, 8),
        };
        if size < header as u64 {
            return corrupt(format!(
                "box '{}' declares size {size}, smaller than its header",
                fourcc(&kind)
            ));
        }
        if size > rest as u64 {
            let msg = format!(
                "box '{}' declares {size} bytes but only {rest} remain",
                fourcc(&kind)
            );
            return Err(if top_level {
                DemuxError::Truncated(msg)
            } else {
                DemuxError::Corrupt(msg)
            });
        }
        let end = pos + size as usize;
        out.push(BoxRef {
            kind,
            start: pos,
            payload: pos + header..end,
        });
        pos = end;
    }
    Ok(out)
}

fn fourcc(kind: &[u8]) -> String {
    kind.iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

fn find<'a>(data: &'a [u8], list: &[BoxRef], kind: &[u8; 4]) -> Option<&'a [u8]> {
    list.iter()
        .find(|b| &b.kind == kind)
        .map(|b| &data[b.payload.clone()])
}

fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> DResult<Option<&'a [u8]>> {
    let list = boxes(data, false)?;
    Ok(find(data, &list, kind))
}

fn need<'a>(data: &'a [u8], kind: &'static [u8; 4], parent: &str) -> DResult<&'a [u8]> {
    child(data, kind)?.map_or_else(
        || corrupt(format!("'{parent}' has no '{}' box", fourcc(kind))),
        Ok,
    )
}

/// Human name for a sample-entry fourcc, for `UnsupportedCodec`.
fn codec_name(kind: &[u8]) -> String {
    let name = match kind {
        b"hvc1" | b"hev1" => "H.265/HEVC",
        b"av01" => "AV1",
        b"vp08" => "VP8",
        b"vp09" => "VP9",
        b"mp4v" => "MPEG-4 Part 2",
        b"encv" => "encrypted video",
        b"jpeg" | b"mjpa" | b"mjpb" => "Motion JPEG",
        b"apch" | b"apcn" | b"apcs" | b"apco" | b"ap4h" => "Apple ProRes",
        _ => "unknown codec",
    };
    format!("{} ({name})", fourcc(kind))
}

/// Finds the first video track and lists its samples in decode order.
pub fn demux(data: &[u8]) -> DResult<Track> {
    let top = boxes(data, true)?;
    let Some(moov) = find(data, &top, b"moov") else {
        return corrupt("no 'moov' box (movie header); the file may be incomplete");
    };
    let moov_boxes = boxes(moov, false)?;
    let mut chosen = None;
    for b in moov_boxes.iter().filter(|b| &b.kind == b"trak") {
        let trak = &moov[b.payload.clone()];
        let mdia = need(trak, b"mdia", "trak")?;
        let hdlr = need(mdia, b"hdlr", "mdia")?;
        if hdlr.get(8..12) == Some(b"vide") {
            chosen = Some(trak);
            break;
        }
    }
    let trak = chosen.ok_or(DemuxError::NoVideoTrack)?;
    let mut tkhd = Cursor::new(need(trak, b"tkhd", "trak")?, "tkhd");
    let version = tkhd.u8()?;
    tkhd.bytes(3)?;
    tkhd.bytes(if version == 1 { 16 } else { 8 })?;
    let track_id = tkhd.u32()?;

    let mdia = need(trak, b"mdia", "trak")?;
    let mut mdhd = Cursor::new(need(mdia, b"mdhd", "mdia")?, "mdhd");
    let version = mdhd.u8()?;
    mdhd.bytes(3)?;
    mdhd.bytes(if version == 1 { 16 } else { 8 })?;
    let timescale = mdhd.u32()?;
    if timescale == 0 {
        return corrupt("'mdhd' timescale is 0");
    }
    let stbl = need(need(mdia, b"minf", "mdia")?, b"stbl", "minf")?;
    let mut track = parse_stsd(need(stbl, b"stsd", "stbl")?, timescale)?;
    track.samples = parse_sample_table(stbl, data.len())?;

    if let Some(mvex) = child(moov, b"mvex")? {
        let defaults = parse_trex(mvex, track_id)?;
        for b in top.iter().filter(|b| &b.kind == b"moof") {
            parse_moof(
                data,
                b.start,
                &data[b.payload.clone()],
                track_id,
                &defaults,
                &mut track.samples,
            )?;
        }
    }
    for s in &track.samples {
        if s.range.end > data.len() {
            return Err(DemuxError::Truncated(format!(
                "sample data at bytes {}..{} lies past the end of the {}-byte file",
                s.range.start,
                s.range.end,
                data.len()
            )));
        }
    }
    Ok(track)
}

fn parse_stsd(stsd: &[u8], timescale: u32) -> DResult<Track> {
    let mut c = Cursor::new(stsd, "stsd");
    c.u32()?;
    if c.u32()? == 0 {
        return corrupt("'stsd' has no sample entries");
    }
    let entries = boxes(&stsd[8..], false)?;
    let Some(entry) = entries.first() else {
        return corrupt("'stsd' has no sample entries");
    };
    if &entry.kind != b"avc1" && &entry.kind != b"avc3" {
        return Err(DemuxError::UnsupportedCodec(codec_name(&entry.kind)));
    }
    let body = &stsd[8..][entry.payload.clone()];
    let mut c = Cursor::new(body, "avc1");
    c.bytes(24)?;
    let width = c.u16()? as u32;
    let height = c.u16()? as u32;
    c.bytes(14)?;
    let name = c.bytes(32)?;
    let name_len = (name[0] as usize).min(31);
    let compressor = String::from_utf8_lossy(&name[1..1 + name_len]).into_owned();
    c.bytes(4)?;
    let avcc = child(&body[78..], b"avcC")?;
    let (mut sps, mut pps, mut nal_length_size) = (Vec::new(), Vec::new(), 4);
    if let Some(avcc) = avcc {
        let mut c = Cursor::new(avcc, "avcC");
        c.bytes(4)?;
        nal_length_size = (c.u8()? & 3) as usize + 1;
        if nal_length_size == 3 {
            return corrupt("'avcC' NAL length size 3 is not allowed");
        }
        let n_sps = c.u8()? & 0x1f;
        for _ in 0..n_sps {
            let len = c.u16()? as usize;
            sps.push(c.bytes(len)?.to_vec());
        }
        let n_pps = c.u8()?;
        for _ in 0..n_pps {
            let len = c.u16()? as usize;
            pps.push(c.bytes(len)?.to_vec());
        }
    } else if &entry.kind == b"avc1" {
        return corrupt("'avc1' sample entry has no 'avcC' decoder configuration");
    }
    Ok(Track {
        width,
        height,
        timescale,
        nal_length_size,
        compressor,
        sps,
        pps,
        samples: Vec::new(),
    })
}

/// Expands stts/ctts/stsz/stsc/stco into per-sample byte ranges and times.
fn parse_sample_table(stbl: &[u8], file_len: usize) -> DResult<Vec<Sample>> {
    // stsz: a constant size or one u32 per sample.
    let mut c = Cursor::new(need(stbl, b"stsz", "stbl")?, "stsz");
    c.u32()?;
    let constant = c.u32()?;
    let n = if constant == 0 {
        c.count(4)?
    } else {
        c.u32()? as usize
    };
    if n == 0 {
        return Ok(Vec::new());
    }
    // Every sample needs at least one byte of the file: bounds `n` before allocating per sample.
    if n > file_len {
        return corrupt(format!("{n} samples cannot fit in a {file_len}-byte file"));
    }
    let sizes: Vec<u32> = if constant == 0 {
        (0..n).map(|_| c.u32()).collect::<DResult<_>>()?
    } else {
        vec![constant; n]
    };

    let mut c = Cursor::new(need(stbl, b"stts", "stbl")?, "stts");
    c.u32()?;
    let runs = c.count(8)?;
    let mut durations = Vec::with_capacity(n);
    for _ in 0..runs {
        let count = c.u32()? as usize;
        let delta = c.u32()?;
        let take = count.min(n - durations.len());
        durations.extend(std::iter::repeat_n(delta, take));
    }
    // A short stts repeats its last delta, as players do.
    let last = durations.last().copied().unwrap_or(0);
    durations.resize(n, last);

    let mut offsets_cts = vec![0i64; n];
    if let Some(ctts) = child(stbl, b"ctts")? {
        let mut c = Cursor::new(ctts, "ctts");
        let version = c.u8()?;
        c.bytes(3)?;
        let runs = c.count(8)?;
        let mut i = 0;
        for _ in 0..runs {
            let count = c.u32()? as usize;
            let raw = c.u32()?;
            let off = if version == 1 {
                raw as i32 as i64
            } else {
                raw as i64
            };
            for _ in 0..count.min(n - i) {
                offsets_cts[i] = off;
                i += 1;
            }
        }
    }

    let chunk_offsets: Vec<u64> = if let Some(stco) = child(stbl, b"stco")? {
        let mut c = Cursor::new(stco, "stco");
        c.u32()?;
        let k = c.count(4)?;
        (0..k)
            .map(|_| c.u32().map(u64::from))
            .collect::<DResult<_>>()?
    } else if let Some(co64) = child(stbl, b"co64")? {
        let mut c = Cursor::new(co64, "co64");
        c.u32()?;
        let k = c.count(8)?;
        (0..k).map(|_| c.u64()).collect::<DResult<_>>()?
    } else {
        return corrupt("'stbl' has neither 'stco' nor 'co64'");
    };

    let mut c = Cursor::new(need(stbl, b"stsc", "stbl")?, "stsc");
    c.u32()?;
    let k = c.count(12)?;
    let mut stsc = Vec::with_capacity(k);
    for _ in 0..k {
        let first = c.u32()? as usize;
        let per = c.u32()? as usize;
        c.u32()?;
        if first == 0 || stsc.last().is_some_and(|&(f, _)| first <= f) {
            return corrupt("'stsc' first-chunk numbers are not increasing from 1");
        }
        stsc.push((first, per));
    }

    let mut samples = Vec::with_capacity(n);
    let mut dts = 0i64;
    'chunks: for (ci, &chunk_off) in chunk_offsets.iter().enumerate() {
        let chunk_no = ci + 1;
        let per = stsc
            .iter()
            .rev()
            .find(|&&(f, _)| f <= chunk_no)
            .map_or(0, |&(_, p)| p);
        let mut off = chunk_off;
        for _ in 0..per {
            let i = samples.len();
            if i == n {
                break 'chunks;
            }
            let size = sizes[i] as u64;
            let end = off + size;
            let (start, end) = match (usize::try_from(off), usize::try_from(end)) {
                (Ok(s), Ok(e)) => (s, e),
                _ => return corrupt("sample offset overflows"),
            };
            samples.push(Sample {
                range: start..end,
                dts,
                pts: dts + offsets_cts[i],
                duration: durations[i],
            });
            dts += durations[i] as i64;
            off = end as u64;
        }
    }
    if samples.len() != n {
        return corrupt(format!(
            "'stsc'/'stco' place {} of the {n} samples listed in 'stsz'",
            samples.len()
        ));
    }
    Ok(samples)
}

#[derive(Default, Clone, Copy)]
struct FragDefaults {
    duration: u32,
    size: u32,
}

fn parse_trex(mvex: &[u8], track_id: u32) -> DResult<FragDefaults> {
    for b in boxes(mvex, false)?.iter().filter(|b| &b.kind == b"trex") {
        let mut c = Cursor::new(&mvex[b.payload.clone()], "trex");
        c.u32()?;
        if c.u32()? == track_id {
            c.u32()?; // sample description index
            let duration = c.u32()?;
            let size = c.u32()?;
            return Ok(FragDefaults { duration, size });
        }
    }
    Ok(FragDefaults::default())
}

fn parse_moof(
    file: &[u8],
    moof_start: usize,
    moof: &[u8],
    track_id: u32,
    trex: &FragDefaults,
    samples: &mut Vec<Sample>,
) -> DResult<()> {
    for traf_box in boxes(moof, false)?.iter().filter(|b| &b.kind == b"traf") {
        let traf = &moof[traf_box.payload.clone()];
        let list = boxes(traf, false)?;
        let Some(tfhd) = find(traf, &list, b"tfhd") else {
            return corrupt("'traf' has no 'tfhd'");
        };
        let mut c = Cursor::new(tfhd, "tfhd");
        let flags = c.u32()? & 0xff_ffff;
        if c.u32()? != track_id {
            continue;
        }
        let mut base = moof_start as u64;
        let mut defaults = *trex;
        if flags & 0x1 != 0 {
            base = c.u64()?;
        }
        if flags & 0x2 != 0 {
            c.u32()?;
        }
        if flags & 0x8 != 0 {
            defaults.duration = c.u32()?;
        }
        if flags & 0x10 != 0 {
            defaults.size = c.u32()?;
        }
        let mut dts = samples.last().map_or(0, |s| s.dts + s.duration as i64);
        if let Some(tfdt) = find(traf, &list, b"tfdt") {
            let mut c = Cursor::new(tfdt, "tfdt");
            let version = c.u8()?;
            c.bytes(3)?;
            let t = if version == 1 {
                c.u64()?
            } else {
                c.u32()? as u64
            };
            dts = i64::try_from(t)
                .map_err(|_| DemuxError::Corrupt("'tfdt' time overflows".into()))?;
        }
        let mut next = base;
        for trun in list.iter().filter(|b| &b.kind == b"trun") {
            let mut c = Cursor::new(&traf[trun.payload.clone()], "trun");
            let vf = c.u32()?;
            let (version, flags) = (vf >> 24, vf & 0xff_ffff);
            let per_sample = [0x100, 0x200, 0x400, 0x800]
                .iter()
                .filter(|&&f| flags & f != 0)
                .count()
                * 4;
            let n = c.u32()? as usize;
            let mut off = if flags & 0x1 != 0 {
                let d = c.u32()? as i32 as i64;
                base.checked_add_signed(d)
                    .ok_or_else(|| DemuxError::Corrupt("'trun' data offset underflows".into()))?
            } else {
                next
            };
            if flags & 0x4 != 0 {
                c.u32()?;
            }
            if n > file.len() || n.saturating_mul(per_sample) > c.remaining() {
                return corrupt(format!("'trun' declares {n} samples that do not fit"));
            }
            for _ in 0..n {
                let duration = if flags & 0x100 != 0 {
                    c.u32()?
                } else {
                    defaults.duration
                };
                let size = if flags & 0x200 != 0 {
                    c.u32()?
                } else {
                    defaults.size
                };
                if flags & 0x400 != 0 {
                    c.u32()?;
                }
                let cto = if flags & 0x800 != 0 {
                    let raw = c.u32()?;
                    if version == 0 {
                        raw as i64
                    } else {
                        raw as i32 as i64
                    }
                } else {
                    0
                };
                let end = off + size as u64;
                let (start, end_us) = match (usize::try_from(off), usize::try_from(end)) {
                    (Ok(s), Ok(e)) => (s, e),
                    _ => return corrupt("fragment sample offset overflows"),
                };
                if samples.len() >= file.len() {
                    return corrupt("more fragment samples than bytes in the file");
                }
                samples.push(Sample {
                    range: start..end_us,
                    dts,
                    pts: dts + cto,
                    duration,
                });
                dts += duration as i64;
                off = end;
            }
            next = off;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timescales() {
        assert_eq!(timescale_for(16.0), (16000, 1000));
        assert_eq!(timescale_for(30000.0 / 1001.0), (30000, 1001));
        assert_eq!(timescale_for(24000.0 / 1001.0), (24000, 1001));
        assert_eq!(timescale_for(12.5), (12500, 1000));
    }

    #[test]
    fn muxed_header_demuxes_back() {
        let samples = [
            MuxSample {
                size: 3,
                duration: 1000,
                sync: true,
            },
            MuxSample {
                size: 2,
                duration: 1000,
                sync: false,
            },
        ];
        let sps = [0x67, 66, 0, 30, 0xff];
        let pps = [0x68, 0xce];
        let track = MuxTrack {
            width: 64,
            height: 32,
            timescale: 16000,
            sps: &sps,
            pps: &pps,
            samples: &samples,
        };
        let mut file = write_header(&track, 5);
        let payload_at = file.len();
        file.extend_from_slice(&[1, 2, 3, 4, 5]);
        let t = demux(&file).unwrap();
        assert_eq!(
            (t.width, t.height, t.timescale, t.nal_length_size),
            (64, 32, 16000, 4)
        );
        assert_eq!(t.compressor, COMPRESSOR_NAME);
        assert_eq!(t.sps, vec![sps.to_vec()]);
        assert_eq!(t.pps, vec![pps.to_vec()]);
        assert_eq!(t.samples.len(), 2);
        assert_eq!(t.samples[0].range, payload_at..payload_at + 3);
        assert_eq!(t.samples[1].range, payload_at + 3..payload_at + 5);
        assert_eq!((t.samples[1].dts, t.samples[1].pts), (1000, 1000));
        // faststart: moov before mdat.
        let moov = file.windows(4).position(|w| w == b"moov").unwrap();
        let mdat = file.windows(4).position(|w| w == b"mdat").unwrap();
        assert!(moov < mdat);
        // Cut inside the mdat payload: truncated, not corrupt.
        assert!(matches!(
            demux(&file[..file.len() - 1]),
            Err(DemuxError::Truncated(_))
        ));
    }
}

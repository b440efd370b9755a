//! Picture size from the decoder configuration: the H.264 and HEVC sequence
//! parameter sets and the AV1 sequence header OBU, read only as far as the
//! coded size and the cropping (conformance) window.
//!
//! The sample entry and track header want the displayed size, and the
//! publisher's `onMetaData` is optional and sometimes wrong, so it is taken
//! from the bitstream the decoder will use.

use super::MuxError;
use crate::media::flv::VideoConfig;

/// The displayed width and height in pixels of a video configuration.
pub fn dimensions(config: &VideoConfig) -> Result<(u32, u32), MuxError> {
    match config {
        VideoConfig::Avc(avc) => {
            let sps = avc.sps.first().ok_or(bad("H.264 SPS", "no SPS in avcC"))?;
            avc_sps_dimensions(sps)
        }
        VideoConfig::Hevc(hevc) => {
            let sps = hevc
                .arrays
                .iter()
                .find(|(nal_type, _)| *nal_type == 33)
                .and_then(|(_, units)| units.first())
                .ok_or(bad("HEVC SPS", "no SPS in hvcC"))?;
            hevc_sps_dimensions(sps)
        }
        VideoConfig::Av1(av1) => av1_dimensions(av1.raw.get(4..).unwrap_or_default()),
    }
}

fn bad(what: &'static str, why: &'static str) -> MuxError {
    MuxError::BadParameterSet { what, why }
}

/// Removes emulation prevention bytes (`00 00 03` -> `00 00`).
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

/// MSB-first bit reader with Exp-Golomb codes; `None` past the end.
struct Bits<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn bit(&mut self) -> Option<bool> {
        let byte = *self.buf.get(self.pos / 8)?;
        let v = (byte >> (7 - self.pos % 8)) & 1 == 1;
        self.pos += 1;
        Some(v)
    }

    fn bits(&mut self, n: u32) -> Option<u64> {
        let mut v = 0u64;
        for _ in 0..n {
            v = (v << 1) | u64::from(self.bit()?);
        }
        Some(v)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.pos += n;
        (self.pos <= self.buf.len() * 8).then_some(())
    }

    /// Unsigned Exp-Golomb; values past 32 bits are malformed in every field
    /// we read.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while !self.bit()? {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let v = (1u64 << zeros) - 1 + self.bits(zeros)?;
        u32::try_from(v).ok()
    }

    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

fn avc_sps_dimensions(nal: &[u8]) -> Result<(u32, u32), MuxError> {
    let rbsp = unescape(nal);
    parse_avc_sps(&rbsp).ok_or(bad("H.264 SPS", "truncated or out-of-range field"))
}

fn parse_avc_sps(rbsp: &[u8]) -> Option<(u32, u32)> {
    let mut r = Bits::new(rbsp);
    r.skip(8)?; // NAL header
    let profile = r.bits(8)?;
    r.skip(16)?; // constraint flags, level
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    if matches!(
        profile,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc == 3 {
            separate_colour_plane = r.bit()?;
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.skip(1)?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.skip(1)?;
            r.se()?;
            r.se()?;
            let cycle = r.ue()?;
            if cycle > 255 {
                return None;
            }
            for _ in 0..cycle {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.skip(1)?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_map_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = u64::from(r.bit()?);
    if frame_mbs_only == 0 {
        r.skip(1)?; // mb_adaptive_frame_field_flag
    }
    r.skip(1)?; // direct_8x8_inference_flag
    let (mut left, mut right, mut top, mut bottom) = (0, 0, 0, 0);
    if r.bit()? {
        left = u64::from(r.ue()?);
        right = u64::from(r.ue()?);
        top = u64::from(r.ue()?);
        bottom = u64::from(r.ue()?);
    }
    let chroma_array_type = if separate_colour_plane {
        0
    } else {
        chroma_format_idc
    };
    let (sub_w, sub_h) = match chroma_array_type {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let (crop_x, crop_y) = if chroma_array_type == 0 {
        (1, 2 - frame_mbs_only)
    } else {
        (sub_w, sub_h * (2 - frame_mbs_only))
    };
    let width = (width_mbs * 16).checked_sub(crop_x * (left + right))?;
    let height =
        ((2 - frame_mbs_only) * height_map_units * 16).checked_sub(crop_y * (top + bottom))?;
    Some((u32::try_from(width).ok()?, u32::try_from(height).ok()?))
}

fn skip_scaling_list(r: &mut Bits<'_>, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            next = (last + r.se()? + 256).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

fn hevc_sps_dimensions(nal: &[u8]) -> Result<(u32, u32), MuxError> {
    let rbsp = unescape(nal);
    parse_hevc_sps(&rbsp).ok_or(bad("HEVC SPS", "truncated or out-of-range field"))
}

fn parse_hevc_sps(rbsp: &[u8]) -> Option<(u32, u32)> {
    let mut r = Bits::new(rbsp);
    r.skip(16)?; // NAL header
    r.skip(4)?; // sps_video_parameter_set_id
    let max_sub_layers_minus1 = r.bits(3)? as usize;
    r.skip(1)?; // sps_temporal_id_nesting_flag
                // profile_tier_level: the general profile (88 bits) and level (8 bits).
    r.skip(96)?;
    let mut sub_layers = [(false, false); 8];
    for layer in sub_layers.iter_mut().take(max_sub_layers_minus1) {
        *layer = (r.bit()?, r.bit()?);
    }
    if max_sub_layers_minus1 > 0 {
        r.skip(2 * (8 - max_sub_layers_minus1))?;
    }
    for &(profile, level) in sub_layers.iter().take(max_sub_layers_minus1) {
        if profile {
            r.skip(88)?;
        }
        if level {
            r.skip(8)?;
        }
    }
    r.ue()?; // sps_seq_parameter_set_id
    let chroma_format_idc = r.ue()?;
    let separate_colour_plane = chroma_format_idc == 3 && r.bit()?;
    let width = u64::from(r.ue()?);
    let height = u64::from(r.ue()?);
    let (mut left, mut right, mut top, mut bottom) = (0, 0, 0, 0);
    if r.bit()? {
        left = u64::from(r.ue()?);
        right = u64::from(r.ue()?);
        top = u64::from(r.ue()?);
        bottom = u64::from(r.ue()?);
    }
    let (sub_w, sub_h) = match (separate_colour_plane, chroma_format_idc) {
        (false, 1) => (2, 2),
        (false, 2) => (2, 1),
        _ => (1, 1),
    };
    let width = width.checked_sub(sub_w * (left + right))?;
    let height = height.checked_sub(sub_h * (top + bottom))?;
    Some((u32::try_from(width).ok()?, u32::try_from(height).ok()?))
}

/// Finds the sequence header among the av1C config OBUs.
fn av1_dimensions(mut obus: &[u8]) -> Result<(u32, u32), MuxError> {
    const WHAT: &str = "AV1 sequence header";
    while let Some(&header) = obus.first() {
        let obu_type = (header >> 3) & 0x0F;
        let extension = header & 0x04 != 0;
        let has_size = header & 0x02 != 0;
        let mut pos = 1 + usize::from(extension);
        let size = if has_size {
            let (size, len) =
                leb128(obus.get(pos..).unwrap_or_default()).ok_or(bad(WHAT, "bad OBU size"))?;
            pos += len;
            size
        } else {
            obus.len().saturating_sub(pos)
        };
        let end = pos
            .checked_add(size)
            .filter(|&end| end <= obus.len())
            .ok_or(bad(WHAT, "OBU runs past the av1C record"))?;
        if obu_type == 1 {
            return parse_av1_sequence_header(&obus[pos..end])
                .ok_or(bad(WHAT, "truncated or out-of-range field"));
        }
        obus = &obus[end..];
    }
    Err(bad(WHAT, "av1C carries no sequence header OBU"))
}

fn leb128(buf: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0u64;
    for (i, &b) in buf.iter().take(8).enumerate() {
        value |= u64::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Some((usize::try_from(value).ok()?, i + 1));
        }
    }
    None
}

fn parse_av1_sequence_header(obu: &[u8]) -> Option<(u32, u32)> {
    let mut r = Bits::new(obu);
    r.skip(4)?; // seq_profile, still_picture
    if r.bit()? {
        // reduced_still_picture_header
        r.skip(5)?;
    } else {
        let mut decoder_model_info = false;
        let mut buffer_delay_length = 0;
        if r.bit()? {
            // timing_info
            r.skip(64)?;
            if r.bit()? {
                // equal_picture_interval: num_ticks_per_picture_minus_1 (uvlc)
                let mut zeros = 0;
                while !r.bit()? {
                    zeros += 1;
                    if zeros >= 32 {
                        return None;
                    }
                }
                r.skip(zeros)?;
            }
            decoder_model_info = r.bit()?;
            if decoder_model_info {
                buffer_delay_length = r.bits(5)? as usize + 1;
                r.skip(32 + 5 + 5)?;
            }
        }
        let initial_display_delay = r.bit()?;
        let operating_points = r.bits(5)? + 1;
        for _ in 0..operating_points {
            r.skip(12)?; // operating_point_idc
            if r.bits(5)? > 7 {
                r.skip(1)?; // seq_tier
            }
            if decoder_model_info && r.bit()? {
                r.skip(2 * buffer_delay_length + 1)?;
            }
            if initial_display_delay && r.bit()? {
                r.skip(4)?;
            }
        }
    }
    let width_bits = r.bits(4)? as u32 + 1;
    let height_bits = r.bits(4)? as u32 + 1;
    let width = r.bits(width_bits)? + 1;
    let height = r.bits(height_bits)? + 1;
    Some((u32::try_from(width).ok()?, u32::try_from(height).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::flv::{parse_avc_config, parse_hevc_config, Av1Config};
    use bytes::Bytes;
    use proptest::prelude::*;

    #[test]
    fn avc_sps_with_cropping() {
        // x264 via ffmpeg. 320x240 High: 20x15 macroblocks, no cropping.
        let sps = [
            0x67, 0x64, 0x00, 0x0D, 0xAC, 0xD9, 0x41, 0x41, 0xFB, 0x01, 0x10, 0x00, 0x00, 0x03,
            0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0x20, 0xF1, 0x42, 0x99, 0x60,
        ];
        assert_eq!(avc_sps_dimensions(&sps).unwrap(), (320, 240));
        // 1920x1080 High: 68 map units cropped by 4 (8 lines).
        let sps = [
            0x67, 0x64, 0x00, 0x28, 0xAC, 0xD9, 0x40, 0x78, 0x02, 0x27, 0xE5, 0xC0, 0x44, 0x00,
            0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xC8, 0x3C, 0x60, 0xC6, 0x58,
        ];
        assert_eq!(avc_sps_dimensions(&sps).unwrap(), (1920, 1080));
        // 328x250: cropped on both axes (336x256 coded).
        let sps = [
            0x67, 0x64, 0x00, 0x0D, 0xAC, 0xD9, 0x41, 0x50, 0x87, 0x96, 0x4C, 0x04, 0x40, 0x00,
            0x00, 0x03, 0x00, 0x40, 0x00, 0x00, 0x0C, 0x83, 0xC5, 0x0A, 0x65, 0x80,
        ];
        assert_eq!(avc_sps_dimensions(&sps).unwrap(), (328, 250));
        // The SPS from the FLV parser's fixture (1280x720 High 3.1).
        let cfg = parse_avc_config(Bytes::from_static(&[
            0x01, 0x64, 0x00, 0x1F, 0xFF, 0xE1, 0x00, 0x09, 0x67, 0x64, 0x00, 0x1F, 0xAC, 0xD9,
            0x40, 0x50, 0x05, 0x01, 0x00, 0x06, 0x68, 0xEB, 0xE3, 0xCB, 0x22, 0xC0,
        ]))
        .unwrap();
        assert!(
            dimensions(&VideoConfig::Avc(cfg)).is_err(),
            "SPS is cut short"
        );
    }

    #[test]
    fn hevc_sps() {
        // x265 320x240 Main (via ffmpeg).
        let sps: &[u8] = &[
            0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00,
            0x00, 0x03, 0x00, 0x3C, 0xA0, 0x0A, 0x08, 0x0F, 0x16, 0x59, 0x59, 0xA4, 0x93, 0x2B,
            0xC0, 0x5A, 0x02, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x03, 0x00, 0x32, 0x10,
        ];
        assert_eq!(hevc_sps_dimensions(sps).unwrap(), (320, 240));
        let mut record = vec![1, 0x01, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 60];
        record.extend_from_slice(&[
            0xF0, 0x00, 0xFC, 0xFD, 0xF8, 0xF8, 0, 0, 0x0F, 1, 0xA1, 0, 1,
        ]);
        record.extend_from_slice(&u16::try_from(sps.len()).unwrap().to_be_bytes());
        record.extend_from_slice(sps);
        let cfg = parse_hevc_config(record.into()).unwrap();
        assert_eq!(dimensions(&VideoConfig::Hevc(cfg)).unwrap(), (320, 240));
    }

    #[test]
    fn av1_sequence_header() {
        // libaom 320x240 (via ffmpeg): av1C followed by a sequence header OBU.
        let raw = Bytes::from_static(&[
            0x81, 0x00, 0x0C, 0x00, 0x0A, 0x0B, 0x00, 0x00, 0x00, 0x04, 0x3C, 0xFF, 0xBC, 0xFF,
            0xF9, 0x80, 0x40,
        ]);
        let cfg = VideoConfig::Av1(Av1Config {
            profile: 0,
            level: 0,
            raw,
        });
        assert_eq!(dimensions(&cfg).unwrap(), (320, 240));
        let empty = VideoConfig::Av1(Av1Config {
            profile: 0,
            level: 0,
            raw: Bytes::from_static(&[0x81, 0, 0x0C, 0]),
        });
        assert!(matches!(
            dimensions(&empty),
            Err(MuxError::BadParameterSet { .. })
        ));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = avc_sps_dimensions(&bytes);
            let _ = hevc_sps_dimensions(&bytes);
            let _ = av1_dimensions(&bytes);
        }
    }
}

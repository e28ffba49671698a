//! Sanity checks of an MP4/M4A box tree before symphonia reads it.
//!
//! symphonia 0.5's isomp4 reader trusts table entry counts (`stsz`, `stco`,
//! `co64`, `stts`, `stsc`) and allocates `count × entry` bytes up front: a
//! corrupt count makes it request tens of GB, which aborts the process (an
//! allocation failure cannot be caught). Found by the `decode` fuzz target.
//! This walk rejects such files first: every box inside the container boxes
//! must fit in its parent, and every table's entries must fit in its box.

use std::io::{Read, Seek, SeekFrom};

/// Boxes whose payload is a list of boxes (and how many bytes precede it).
fn container_prefix(kind: &[u8; 4]) -> Option<u64> {
    match kind {
        b"moov" | b"trak" | b"mdia" | b"minf" | b"stbl" | b"edts" | b"udta" | b"mvex" | b"moof"
        | b"traf" | b"dinf" | b"ilst" => Some(0),
        b"meta" => Some(4),
        b"stsd" => Some(8),
        _ => None,
    }
}

/// Entry size and count offset (after the box header) of a table box.
fn table_layout(kind: &[u8; 4]) -> Option<(u64, u64)> {
    match kind {
        b"stco" => Some((4, 4)),
        b"co64" => Some((8, 4)),
        b"stts" => Some((8, 4)),
        b"stsc" => Some((12, 4)),
        _ => None,
    }
}

/// True when the first bytes look like an ISO-BMFF file.
pub fn looks_like_mp4(head: &[u8]) -> bool {
    head.len() >= 8
        && matches!(
            &head[4..8],
            b"ftyp" | b"moov" | b"mdat" | b"free" | b"skip" | b"wide"
        )
}

struct Walker<'a, R> {
    r: &'a mut R,
    budget: u32,
}

impl<R: Read + Seek> Walker<'_, R> {
    fn u32_at(&mut self, pos: u64) -> std::io::Result<u32> {
        self.r.seek(SeekFrom::Start(pos))?;
        let mut b = [0u8; 4];
        self.r.read_exact(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    /// Box header at `pos`: (kind, header length, total size); None if it does not fit in `end`.
    fn header(&mut self, pos: u64, end: u64) -> std::io::Result<Option<([u8; 4], u64, u64)>> {
        if pos + 8 > end {
            return Ok(None);
        }
        self.r.seek(SeekFrom::Start(pos))?;
        let mut h = [0u8; 8];
        self.r.read_exact(&mut h)?;
        let kind = [h[4], h[5], h[6], h[7]];
        let size32 = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as u64;
        let (hl, size) = match size32 {
            0 => (8, end - pos),
            1 => {
                let mut b = [0u8; 8];
                self.r.read_exact(&mut b)?;
                (16, u64::from_be_bytes(b))
            }
            s => (8, s),
        };
        Ok(Some((kind, hl, size)))
    }

    /// Checks the boxes in `[start, end)`; `strict` when the range is a container's payload.
    fn walk(&mut self, start: u64, end: u64, strict: bool) -> Result<(), String> {
        let mut pos = start;
        while pos < end {
            self.budget = self.budget.checked_sub(1).ok_or("too many boxes")?;
            let Some((kind, hl, size)) = self.header(pos, end).map_err(|e| e.to_string())? else {
                return Ok(()); // trailing bytes: symphonia reports them if they matter
            };
            let name = String::from_utf8_lossy(&kind).into_owned();
            if size < hl {
                return Err(format!("box '{name}' has invalid size {size}"));
            }
            let box_end = pos.checked_add(size).ok_or("box size overflows")?;
            if box_end > end {
                if strict {
                    return Err(format!("box '{name}' ({size} bytes) overruns its parent"));
                }
                // Top level (e.g. a cut-off mdat): only descend when it is a container.
                if container_prefix(&kind).is_some() {
                    return Err(format!("box '{name}' ({size} bytes) overruns the file"));
                }
                return Ok(());
            }
            let body = pos + hl;
            if let Some(mut prefix) = container_prefix(&kind) {
                // ISO 'meta' is a full box (4 bytes version/flags first); QuickTime's is not.
                if &kind == b"meta"
                    && body + 4 <= box_end
                    && self.u32_at(body).map_err(|e| e.to_string())? == 0
                {
                    prefix = 4;
                }
                self.walk(body + prefix, box_end, true)?;
            } else if let Some((entry, count_at)) = table_layout(&kind) {
                let count = self.u32_at(body + count_at).map_err(|e| e.to_string())? as u64;
                if body + count_at + 4 + count * entry > box_end {
                    return Err(format!(
                        "'{name}' table claims {count} entries, more than its box holds"
                    ));
                }
            } else if &kind == b"stsz" && size >= hl + 12 {
                let sample_size = self.u32_at(body + 4).map_err(|e| e.to_string())?;
                let count = self.u32_at(body + 8).map_err(|e| e.to_string())? as u64;
                if sample_size == 0 && body + 12 + count * 4 > box_end {
                    return Err(format!(
                        "'stsz' table claims {count} entries, more than its box holds"
                    ));
                }
            }
            pos = box_end;
        }
        Ok(())
    }
}

/// Checks an MP4 file of `len` bytes; the reader's position is left undefined.
pub fn check_mp4<R: Read + Seek>(r: &mut R, len: u64) -> Result<(), String> {
    Walker { r, budget: 100_000 }.walk(0, len, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn accepts_the_fixture_and_rejects_a_huge_table() {
        let good = std::fs::read(crate::testutil::fixture("audio/speech.m4a")).unwrap();
        assert!(looks_like_mp4(&good));
        check_mp4(&mut Cursor::new(&good), good.len() as u64).unwrap();
        // ISO 'meta' (full box) as ffmpeg writes it, and a QuickTime-style 'meta' (plain container).
        let ilst = b"\0\0\0\x08ilst";
        for meta in [
            [&b"\0\0\0\x14meta\0\0\0\0"[..], &ilst[..]].concat(),
            [&b"\0\0\0\x10meta"[..], &ilst[..]].concat(),
        ] {
            let udta = [&((meta.len() + 8) as u32).to_be_bytes()[..], b"udta", &meta].concat();
            let moov = [&((udta.len() + 8) as u32).to_be_bytes()[..], b"moov", &udta].concat();
            check_mp4(&mut Cursor::new(&moov), moov.len() as u64).unwrap();
        }
        // Inflate the stsz sample count.
        let i = good.windows(4).position(|w| w == b"stsz").unwrap();
        let mut bad = good.clone();
        bad[i + 12..i + 16].copy_from_slice(&0x7fff_ffffu32.to_be_bytes());
        let e = check_mp4(&mut Cursor::new(&bad), bad.len() as u64).unwrap_err();
        assert!(e.contains("stsz"), "{e}");
    }
}

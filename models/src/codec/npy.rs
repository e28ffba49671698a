//! Minimal `.npy` (NumPy format v1/v2/v3) reading and writing for code
//! matrices and k-means centroids: little-endian, C order, 1-D or 2-D.

use std::io::Write;
use std::path::Path;

/// Errors reading or writing an `.npy` file; the message names the problem.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not a .npy file: {0}")]
    Format(String),
    #[error("unsupported dtype `{0}` (expected {1})")]
    Dtype(String, &'static str),
}

/// A numeric array read from `.npy`, values widened to f64 or i64.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray<T> {
    pub shape: Vec<usize>,
    pub data: Vec<T>,
}

struct Header {
    descr: String,
    fortran: bool,
    shape: Vec<usize>,
    data_start: usize,
}

fn parse_header(bytes: &[u8]) -> Result<Header, NpyError> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(NpyError::Format("missing \\x93NUMPY magic".into()));
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(NpyError::Format(format!("unknown format version {v}"))),
    };
    let end = start + hlen;
    let text = bytes
        .get(start..end)
        .and_then(|b| std::str::from_utf8(b).ok())
        .ok_or_else(|| NpyError::Format("truncated header".into()))?;
    let field = |key: &str| -> Option<&str> {
        let i = text.find(&format!("'{key}'"))?;
        let rest = &text[i + key.len() + 2..];
        Some(rest[rest.find(':')? + 1..].trim_start())
    };
    let descr = field("descr")
        .and_then(|r| r.strip_prefix('\''))
        .and_then(|r| r.split('\'').next())
        .ok_or_else(|| NpyError::Format("no descr in header".into()))?
        .to_string();
    let fortran = field("fortran_order").is_some_and(|r| r.starts_with("True"));
    let shape_txt = field("shape")
        .and_then(|r| r.strip_prefix('('))
        .and_then(|r| r.split(')').next())
        .ok_or_else(|| NpyError::Format("no shape in header".into()))?;
    let shape = shape_txt
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| NpyError::Format(format!("bad shape `{shape_txt}`")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Header {
        descr,
        fortran,
        shape,
        data_start: end,
    })
}

fn read_raw(path: &Path) -> Result<(Header, Vec<u8>), NpyError> {
    let bytes = std::fs::read(path)?;
    let h = parse_header(&bytes)?;
    if h.fortran && h.shape.len() > 1 {
        return Err(NpyError::Format(
            "Fortran-order arrays are not supported".into(),
        ));
    }
    let data = bytes[h.data_start..].to_vec();
    Ok((h, data))
}

fn check_len(h: &Header, data: &[u8], item: usize) -> Result<usize, NpyError> {
    let n: usize = h.shape.iter().product();
    if data.len() < n * item {
        return Err(NpyError::Format(format!(
            "data truncated: shape {:?} needs {} bytes, file has {}",
            h.shape,
            n * item,
            data.len()
        )));
    }
    Ok(n)
}

macro_rules! decode {
    ($data:expr, $n:expr, $t:ty, $w:expr, $conv:expr) => {
        $data
            .chunks_exact($w)
            .take($n)
            .map(|c| $conv(<$t>::from_le_bytes(c.try_into().unwrap())))
            .collect()
    };
}

/// Reads an integer array (`<i8`, `<i4`, `<u4`, `<i2`, `<u2`, `|u1`, `|i1`).
pub fn read_int(path: &Path) -> Result<NpyArray<i64>, NpyError> {
    let (h, d) = read_raw(path)?;
    let expected = "an integer dtype (int64, int32, uint32, int16, uint16, uint8)";
    let data: Vec<i64> = match h.descr.as_str() {
        "<i8" => decode!(d, check_len(&h, &d, 8)?, i64, 8, |v| v),
        "<u8" => decode!(
            d,
            check_len(&h, &d, 8)?,
            u64,
            8,
            |v: u64| v.min(i64::MAX as u64) as i64
        ),
        "<i4" => decode!(d, check_len(&h, &d, 4)?, i32, 4, i64::from),
        "<u4" => decode!(d, check_len(&h, &d, 4)?, u32, 4, i64::from),
        "<i2" => decode!(d, check_len(&h, &d, 2)?, i16, 2, i64::from),
        "<u2" => decode!(d, check_len(&h, &d, 2)?, u16, 2, i64::from),
        "|u1" => decode!(d, check_len(&h, &d, 1)?, u8, 1, i64::from),
        "|i1" => decode!(d, check_len(&h, &d, 1)?, i8, 1, i64::from),
        other => return Err(NpyError::Dtype(other.to_string(), expected)),
    };
    Ok(NpyArray {
        shape: h.shape,
        data,
    })
}

/// Reads a float array (`<f4` or `<f8`) as f32.
pub fn read_f32(path: &Path) -> Result<NpyArray<f32>, NpyError> {
    let (h, d) = read_raw(path)?;
    let data: Vec<f32> = match h.descr.as_str() {
        "<f4" => decode!(d, check_len(&h, &d, 4)?, f32, 4, |v| v),
        "<f8" => decode!(d, check_len(&h, &d, 8)?, f64, 8, |v| v as f32),
        other => return Err(NpyError::Dtype(other.to_string(), "float32 or float64")),
    };
    Ok(NpyArray {
        shape: h.shape,
        data,
    })
}

fn write_with(path: &Path, descr: &str, shape: &[usize], payload: &[u8]) -> Result<(), NpyError> {
    let shape_txt = match shape {
        [n] => format!("({n},)"),
        s => format!(
            "({})",
            s.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_txt}, }}");
    // Pad so that magic(6) + version(2) + len(2) + header + '\n' is a multiple of 64.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    f.write_all(b"\x93NUMPY\x01\x00")?;
    f.write_all(&(header.len() as u16).to_le_bytes())?;
    f.write_all(header.as_bytes())?;
    f.write_all(payload)?;
    f.flush()?;
    Ok(())
}

/// Writes an int64 array of `shape`.
pub fn write_i64(path: &Path, shape: &[usize], data: &[i64]) -> Result<(), NpyError> {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_with(path, "<i8", shape, &bytes)
}

/// Writes a float32 array of `shape`.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), NpyError> {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_with(path, "<f4", shape, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects() {
        let dir = std::env::temp_dir().join(format!("voxtok-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.npy");
        write_i64(&p, &[2, 3], &[1, 2, 3, 4, 5, -6]).unwrap();
        let a = read_int(&p).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, vec![1, 2, 3, 4, 5, -6]);
        assert!(matches!(read_f32(&p), Err(NpyError::Dtype(..))));
        let q = dir.join("b.npy");
        write_f32(&q, &[3], &[0.5, 1.5, -2.0]).unwrap();
        assert_eq!(read_f32(&q).unwrap().data, vec![0.5, 1.5, -2.0]);
        assert!(matches!(read_int(&q), Err(NpyError::Dtype(..))));
        std::fs::write(&q, b"hello").unwrap();
        assert!(matches!(read_int(&q), Err(NpyError::Format(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! NumPy `.npy` writing and reading (float32, C order).

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use ndarray::Array2;
use ndarray_npy::{ReadNpyExt, WriteNpyExt};

use crate::error::{CodecError, Result};
use crate::mel::MelSpectrogram;

/// Writes a 2-D float32 array (row-major `data` of `shape`) as `.npy`.
pub fn write_npy_f32(path: impl AsRef<Path>, data: &[f32], shape: [usize; 2]) -> Result<()> {
    let path = path.as_ref();
    let werr = |detail: String| CodecError::Write {
        path: path.to_path_buf(),
        detail,
    };
    let arr = ndarray::ArrayView2::from_shape((shape[0], shape[1]), data)
        .map_err(|e| werr(e.to_string()))?;
    let file = File::create(path).map_err(|e| werr(e.to_string()))?;
    let mut w = BufWriter::new(file);
    arr.write_npy(&mut w).map_err(|e| werr(e.to_string()))?;
    std::io::Write::flush(&mut w).map_err(|e| werr(e.to_string()))
}

/// Writes a log-mel as `.npy`, float32 `[n_mels, frames]`.
pub fn write_mel_npy(path: impl AsRef<Path>, mel: &MelSpectrogram) -> Result<()> {
    write_npy_f32(path, &mel.data, [mel.n_mels, mel.n_frames])
}

/// Reads a 2-D float32 `.npy` file.
pub fn read_npy_f32(path: impl AsRef<Path>) -> Result<Array2<f32>> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| CodecError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    Array2::<f32>::read_npy(std::io::BufReader::new(file)).map_err(|e| CodecError::Malformed {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mel_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.npy");
        let mel = MelSpectrogram {
            n_mels: 3,
            n_frames: 2,
            data: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        };
        write_mel_npy(&p, &mel).unwrap();
        let a = read_npy_f32(&p).unwrap();
        assert_eq!(a, mel.to_array());
        assert_eq!(a[[2, 1]], 6.0);
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[..6], b"\x93NUMPY");
        assert!(String::from_utf8_lossy(&bytes[..128]).contains("'descr': '<f4'"));
    }
}

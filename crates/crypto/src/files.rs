//! Durable, private file writes for key material and state files.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::CryptoError;

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CryptoError + '_ {
    move |source| CryptoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `contents` to `path` atomically (temp file, fsync, rename, fsync of the directory),
/// with mode 0600 when `private` is set and 0644 otherwise.
pub fn write_atomic(path: &Path, contents: &[u8], private: bool) -> Result<(), CryptoError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let tmp = path.with_extension("tmp");
    let mode = if private { 0o600 } else { 0o644 };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_error(&tmp))?;
    file.write_all(contents).map_err(io_error(&tmp))?;
    file.sync_all().map_err(io_error(&tmp))?;
    fs::rename(&tmp, path).map_err(io_error(path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))?;
    Ok(())
}

/// Reads `path`, or `None` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, CryptoError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CryptoError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

//! Shared by the fuzz targets: writes the input to a per-process file so the
//! path loaders (which `mmap` the file) parse the same bytes as the in-memory
//! loaders.

use std::path::PathBuf;

/// Writes `data` to this process's scratch file with extension `ext` and returns its path.
pub fn scratch(data: &[u8], ext: &str) -> PathBuf {
    let dir = std::env::var_os("KILN_FUZZ_TMP").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/dev/shm"));
    let p = dir.join(format!("kiln-fuzz-{}.{ext}", std::process::id()));
    std::fs::write(&p, data).expect("cannot write the fuzz scratch file");
    p
}

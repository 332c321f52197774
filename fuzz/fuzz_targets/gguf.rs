//! Fuzzes the gguf reader: any input must give an array or an error, never a
//! panic or an allocation sized by a lying header.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = kiln_core::io::read_gguf_bytes(data.to_vec()) {
        for t in &f.tensors {
            let _ = t.bytes();
            let _ = t.to_array().eval();
        }
        for v in f.metadata.values() {
            let _ = v.to_array();
        }
    }
});

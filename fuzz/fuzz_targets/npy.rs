//! Fuzzes the npy reader: any input must give an array or an error, never a
//! panic or an allocation sized by a lying header.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = kiln_core::io::load_npy_bytes(data.to_vec()) {
        let _ = a.eval();
    }
});

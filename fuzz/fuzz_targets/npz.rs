//! Fuzzes the npz reader: any input must give an array or an error, never a
//! panic or an allocation sized by a lying header.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = kiln_core::io::load_npz_bytes(data.to_vec()) {
        for a in m.values() {
            let _ = a.eval();
        }
    }
});

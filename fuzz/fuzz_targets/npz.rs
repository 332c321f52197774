//! Fuzzes the npz reader, in memory and through a file mapping: any input must
//! give arrays or an error, never a panic or an allocation sized by a lying
//! header.
#![no_main]

mod common;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mem = kiln_core::io::load_npz_bytes(data.to_vec());
    let file = kiln_core::io::load_npz(common::scratch(data, "npz"));
    assert_eq!(mem.is_ok(), file.is_ok(), "in-memory and mapped parses disagree");
    for m in [mem, file].into_iter().flatten() {
        for a in m.values() {
            let _ = a.eval();
        }
    }
});

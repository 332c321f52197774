//! Fuzzes the npy reader, in memory and through a file mapping: any input must
//! give an array or an error, never a panic or an allocation sized by a lying
//! header.
#![no_main]

mod common;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mem = kiln_core::io::load_npy_bytes(data.to_vec());
    let file = kiln_core::io::load_npy(common::scratch(data, "npy"));
    assert_eq!(mem.is_ok(), file.is_ok(), "in-memory and mapped parses disagree");
    for a in [mem, file].into_iter().flatten() {
        let _ = a.eval();
    }
});

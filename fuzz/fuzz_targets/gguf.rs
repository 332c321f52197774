//! Fuzzes the gguf reader, in memory and through a file mapping: any input
//! must give tensors or an error, never a panic or an allocation sized by a
//! lying header.
#![no_main]

mod common;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mem = kiln_core::io::read_gguf_bytes(data.to_vec());
    let file = kiln_core::io::read_gguf(common::scratch(data, "gguf"));
    assert_eq!(mem.is_ok(), file.is_ok(), "in-memory and mapped parses disagree");
    for f in [mem, file].into_iter().flatten() {
        for t in &f.tensors {
            let _ = t.bytes();
            let _ = t.to_array().eval();
        }
        for v in f.metadata.values() {
            if let Some(a) = v.to_array() {
                let _ = a.eval();
            }
        }
    }
});

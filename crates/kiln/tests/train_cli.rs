//! `kiln train` end to end on a tiny model: a run resumed from a checkpoint
//! ends with exactly the weights of the uninterrupted run, and the compiled
//! training step matches the eager one.

use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-train-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `kiln train` on `data` into `out` with a tiny model; returns stdout.
fn train(data: &Path, out: &Path, steps: usize, extra: &[&str]) -> String {
    let steps = steps.to_string();
    let mut args = vec![
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--steps",
        &steps,
        "--batch",
        "3",
        "--context",
        "16",
        "--layers",
        "1",
        "--d-model",
        "16",
        "--heads",
        "2",
        "--warmup",
        "2",
        "--eval-every",
        "2",
        "--eval-batches",
        "2",
        "--save-every",
        "2",
        "--seed",
        "7",
    ];
    args.extend_from_slice(extra);
    let o = Command::new(env!("CARGO_BIN_EXE_kiln")).args(&args).output().unwrap();
    assert!(o.status.success(), "kiln {args:?} failed:\n{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn final_loss(stdout: &str) -> f64 {
    let line = stdout.lines().find(|l| l.starts_with("final held-out loss:")).expect("final loss line");
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[test]
fn resume_continues_the_same_run_and_compile_matches_eager() {
    let dir = scratch("resume");
    let data = dir.join("text.txt");
    let text: String = (0..200).map(|i| format!("line {i}: the quick brown fox jumps over the lazy dog.\n")).collect();
    std::fs::write(&data, text).unwrap();

    let (full, part) = (dir.join("full"), dir.join("part"));
    let a = train(&data, &full, 6, &[]);
    train(&data, &part, 6, &["--stop-at", "4"]);
    let b = train(&data, &part, 6, &["--resume"]);
    let weights = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    let state = |d: &Path| std::fs::read(d.join("optimizer.safetensors")).unwrap();
    assert!(weights(&full) == weights(&part), "resumed weights differ from the uninterrupted run");
    assert!(state(&full) == state(&part), "resumed optimizer state differs");
    assert_eq!(final_loss(&a), final_loss(&b));

    // The compiled step (default) and the eager one agree.
    let eager = dir.join("eager");
    let c = train(&data, &eager, 6, &["--eager"]);
    let (lc, le) = (final_loss(&a), final_loss(&c));
    assert!((lc - le).abs() <= 1e-4 * le.abs(), "compiled {lc} vs eager {le}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_flags_are_reported() {
    let o = Command::new(env!("CARGO_BIN_EXE_kiln")).args(["train", "--steps", "0"]).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("must be positive"));
}

//! Checkpoints and stored client memories against damaged files (`fedsoft_core::mutate`): an error naming
//! the file, never a panic and never a resumed run from a damaged checkpoint.
//! `FEDSOFT_FUZZ_CASES=1000000 cargo test -p fedsoft-engine --release --test robustness` is the long run.

use fedsoft_core::mutate::{cases, damaged};
use fedsoft_engine::checkpoint::{self, CHECKPOINT, ClientMemory, memory_from_bytes, memory_to_bytes};
use fedsoft_engine::engine::{Experiment, RunOptions};
use fedsoft_engine::fixtures::{tiny_config, tiny_text_task};
use std::path::{Path, PathBuf};

#[test]
fn damaged_checkpoints_and_memories_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = tiny_text_task(tmp.path());
    let cfg = tiny_config(&model, &data, &["controller.kind=\"fixed\"", "rounds.checkpoint_every=1"]);
    let exp = Experiment::prepare(&cfg, Path::new("/nonexistent-cache")).unwrap();
    let out = tmp.path().join("run");
    let opts = RunOptions {
        out_dir: out.clone(),
        resume: false,
        cache: PathBuf::from("/nonexistent-cache"),
        stop_after: Some(2),
    };
    exp.run(&opts, |_| {}).unwrap();
    let shapes = exp.shapes().to_vec();
    let valid = std::fs::read(out.join(CHECKPOINT)).unwrap();
    let state = checkpoint::load(&out, &shapes).unwrap().unwrap();
    let (client, memory): (&usize, &ClientMemory) = state.memories.iter().next().expect("error-feedback memories");
    let memory_bytes = memory_to_bytes(*client, memory);

    let damaged_dir = tmp.path().join("damaged");
    std::fs::create_dir_all(&damaged_dir).unwrap();
    let mut loaded = 0;
    let total = cases(1000);
    for case in 0..total {
        let bytes = damaged(&valid, case);
        let same = bytes == valid;
        std::fs::write(damaged_dir.join(CHECKPOINT), &bytes).unwrap();
        let outcome = std::panic::catch_unwind(|| checkpoint::load(&damaged_dir, &shapes).map(|s| s.is_some()));
        let Ok(result) = outcome else { panic!("case {case}: the checkpoint reader panicked") };
        // The digest refuses every change to what was written.
        if result.is_ok() {
            assert!(same, "case {case}: a damaged checkpoint was accepted");
            loaded += 1;
        }
        let mem = damaged(&memory_bytes, case);
        let outcome = std::panic::catch_unwind(|| memory_from_bytes(&mem, *client, &shapes, Path::new("memory")));
        let Ok(result) = outcome else { panic!("case {case}: the memory reader panicked") };
        // A client's memory carries a digest too: every change to it is refused.
        assert!(result.is_err() || mem == memory_bytes, "case {case}: a damaged client memory was accepted");
    }
    assert_eq!(&memory_from_bytes(&memory_bytes, *client, &shapes, Path::new("memory")).unwrap(), memory);
    // Another client's memory is not this one's, even intact.
    let e = memory_from_bytes(&memory_bytes, client + 1, &shapes, Path::new("memory-7.safetensors")).unwrap_err();
    assert!(e.to_string().contains("memory-7.safetensors") && e.to_string().contains("digest"), "{e}");
    // Only the rare "damage" that rewrote bytes to their own values leaves the original.
    assert!(loaded * 100 <= total, "{loaded} of {total} damaged copies were identical to the original");
}

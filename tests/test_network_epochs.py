"""A run's file names: what training writes, what it prunes, and what Compare finds."""

from lora_trainer.network.epochs import epoch_file, find_epoch_files, saved_epochs, split_epoch_stem


def touch(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")
    return folder


def test_training_names_and_only_its_own_names_are_its_epochs(tmp_path):
    assert epoch_file(tmp_path, "alice", 3).name == "alice-03.safetensors"
    assert epoch_file(tmp_path, "alice", 3, total_epochs=120).name == "alice-003.safetensors"
    touch(tmp_path, "alice-01.safetensors", "alice-002.safetensors", "alice-2024.safetensors", "alice.safetensors",
          "alice-03.png", "bob-04.safetensors")
    # resume and pruning see the 2-3 digit files training writes: never a user's alice-2024
    assert list(saved_epochs(tmp_path, "alice")) == [1, 2]


def test_compare_finds_any_runs_epochs_kohyas_too(tmp_path):
    touch(tmp_path, "run-000001.safetensors", "run-000004.safetensors", "run.safetensors")
    assert [(f.stem, f.epoch, f.label) for f in find_epoch_files(tmp_path)] == [
        ("run-000001", 1, "run-000001"), ("run-000004", 4, "run-000004"), ("run", None, "run (final)")]
    assert split_epoch_stem("my-lora-12") == ("my-lora", 12) and split_epoch_stem("final") is None

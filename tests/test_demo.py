"""The demo project: what `./studio.sh demo` starts on must train and compare out of the box."""

import json

from lora_trainer.cli import main
from lora_trainer.cli.demo import DEMO_MODEL, ensure_demo_project
from lora_trainer.demo import shipped
from lora_trainer.models.checkpoint import native_size, read_safetensors_metadata


def test_demo_project_has_pictures_captions_a_model_and_a_training_setup(tmp_path, capsys):
    project = ensure_demo_project(tmp_path)
    images = sorted(project.dataset_dir.glob("*.png"))
    assert len(images) == 16
    assert (project.dataset_dir / "demo_01.txt").read_text() == "lsdemo, blue background, large"
    assert (project.dataset_dir / "demo_05.txt").read_text() == "lsdemo, black background, large"
    model = project.dir / DEMO_MODEL
    if shipped.available("sd15"):
        assert shipped.sha256_of(model) == shipped.SHA256["sd15"]  # a copy of the learned model
    assert native_size("sd15", read_safetensors_metadata(model)) == (64, 64)  # so grids default to 64 px
    assert project.load_file().section("train")["checkpoint"] == DEMO_MODEL

    assert main(["train", "--project", "demo", "--root", str(tmp_path), "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    # 16 images x 5 repeats / batch 2 = 40 steps per epoch; 4 epochs; at the model's 64 px
    assert plan["steps"] == {"batches_per_epoch": 40, "steps_per_epoch": 40, "epochs": 4, "total_steps": 160, "warmup_steps": 8}
    assert plan["buckets"] == {"64x64": 80}
    assert plan["network"]["modules"] == {"unet": 120, "te": 18}


def test_demo_project_is_created_once_and_user_edits_stay(tmp_path):
    project = ensure_demo_project(tmp_path)
    caption = project.dataset_dir / "demo_01.txt"
    caption.write_text("my edit")
    pf = project.load_file()
    train = pf.section("train")
    train["max_train_epochs"] = 7
    pf.set_section("train", train)
    project.save_file(pf)
    ensure_demo_project(tmp_path)
    assert caption.read_text() == "my edit"
    assert project.load_file().section("train")["max_train_epochs"] == 7


def test_an_old_demo_project_is_renewed_and_its_files_kept_in_the_trash(tmp_path):
    """A demo project made before the 64-px demo (a random model without its size, shapes) gets
    the new model and the concept's pictures; the old files can be restored from the Trash."""
    from lora_trainer.models.demo import write_demo_checkpoint
    from lora_trainer.project import create_project
    from lora_trainer.trash import list_batches

    project = create_project(tmp_path, "demo")
    write_demo_checkpoint(project.dir / DEMO_MODEL, "sd15")
    (project.dataset_dir / "demo_01.png").write_bytes(b"old picture")
    (project.dataset_dir / "demo_01.txt").write_text("lsdemo, red circle, simple background")
    ensure_demo_project(tmp_path)
    assert native_size("sd15", read_safetensors_metadata(project.dir / DEMO_MODEL)) == (64, 64)
    assert (project.dataset_dir / "demo_01.txt").read_text() == "lsdemo, blue background, large"
    [batch] = list_batches(project.dir)
    assert sorted(batch.files) == ["dataset/demo_01.png", "dataset/demo_01.txt", DEMO_MODEL]
    assert project.load_file().section("train")["resolution"] == 64
    ensure_demo_project(tmp_path)  # renewed once: the new model is current
    assert len(list_batches(project.dir)) == 1

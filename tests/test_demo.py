"""The demo project: what `./studio.sh demo` starts on must train and compare out of the box."""

import json

from lora_trainer.cli import main
from lora_trainer.cli.demo import DEMO_MODEL, ensure_demo_project


def test_demo_project_has_pictures_captions_a_model_and_a_training_setup(tmp_path, capsys):
    project = ensure_demo_project(tmp_path)
    images = sorted(project.dataset_dir.glob("*.png"))
    assert len(images) == 12
    assert (project.dataset_dir / "demo_01.txt").read_text().startswith("lsdemo, ")
    assert (project.dir / DEMO_MODEL).stat().st_size > 1_000_000
    assert project.load_file().section("train")["checkpoint"] == DEMO_MODEL

    assert main(["train", "--project", "demo", "--root", str(tmp_path), "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    # 12 images x 2 repeats / batch 2 = 12 steps per epoch; 4 epochs
    assert plan["steps"] == {"batches_per_epoch": 12, "steps_per_epoch": 12, "epochs": 4, "total_steps": 48, "warmup_steps": 2}
    assert plan["buckets"] == {"128x128": 24}
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

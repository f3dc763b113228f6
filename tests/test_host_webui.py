"""The WebUI host against the fake WebUI (tests/fake_webui): loaded models assembled from our own
tiny model code in AUTOMATIC1111's and Forge's attribute layouts.

Borrowing copies nothing on A1111 (storage pointers equal) and clones clean, non-inference tensors
on Forge; a LoRA an earlier generation merged is taken out first; the WebUI's modules come back
exactly (tensor objects, dtypes, devices, requires_grad, train/eval) after success, error, cancel
and Interrupt; the queue lock is held and shared.state driven while a real train_job runs; epoch
files get a user-metadata card and the Lora list is refreshed; a rewritten file is not left merged.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch

from lora_trainer.errors import Cancelled, StudioError
from lora_trainer.models import checkpoint as ckpt
from lora_trainer.progress import CancelToken, ProgressEvent
from lora_trainer.train.config import DatasetFolder, TrainConfig

FAKE_WEBUI = Path(__file__).resolve().parent / "fake_webui"
FAKES = ("modules", "networks", "fake_models", "backend")

FAST = {"resolution": 256, "min_bucket_reso": 256, "bucket_no_upscale": True, "optimizer": "AdamW", "optimizer_args": {},
        "mixed_precision": "no", "max_token_length": 75, "lr_scheduler": "constant", "lr_warmup_ratio": 0.0,
        "network_dim": 4, "network_alpha": 4.0, "save_every_n_epochs": 1, "keep_only_last_n_epochs": 0,
        "train_batch_size": 2}


@pytest.fixture
def webui(tmp_path, monkeypatch):
    """The fake WebUI on sys.path with fresh modules; the Lora folder is tmp/models/Lora."""

    def purge():
        return {n: sys.modules.pop(n) for n in list(sys.modules) if n.split(".")[0] in FAKES}

    saved = purge()
    monkeypatch.syspath_prepend(str(FAKE_WEBUI))
    import fake_models
    import networks
    from modules import call_queue, paths, processing, shared

    paths.models_path = str(tmp_path / "models")
    paths.data_path = str(tmp_path)
    shared.cmd_opts.lora_dir = str(tmp_path / "models" / "Lora")
    Path(shared.cmd_opts.lora_dir).mkdir(parents=True)
    yield types.SimpleNamespace(shared=shared, networks=networks, processing=processing, lock=call_queue.queue_lock,
                                models=fake_models, lora_dir=Path(shared.cmd_opts.lora_dir))
    purge()
    sys.modules.update(saved)


def host():
    from lora_trainer.host.webui import WebUIHost

    return WebUIHost(device="cpu")


def snapshot(modules):
    """Everything the host must put back, per tensor and per submodule."""
    out = []
    for root in modules:
        for name, m in root.named_modules():
            out.append((name, m.training))
            for pn, p in m._parameters.items():
                if p is not None:
                    out.append((name, pn, id(p), p.dtype, str(p.device), p.requires_grad))
    return out


def values(modules):
    return [t.detach().clone() for root in modules for t in root.state_dict().values()]


def same_values(a, b):
    return len(a) == len(b) and all(x.dtype == y.dtype and torch.equal(x, y) for x, y in zip(a, b))


def storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


# ---- key layouts and zero copy ---------------------------------------------------------------


def test_normalize_webui_key():
    from lora_trainer.host.webui_compat import normalize_webui_key

    assert normalize_webui_key("cond_stage_model.wrapped.transformer.text_model.embeddings.token_embedding.wrapped.weight") == \
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
    assert normalize_webui_key("conditioner.embedders.1.wrapped.model.transformer.resblocks.0.attn.in_proj_weight") == \
        "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"
    assert normalize_webui_key("model.diffusion_model.input_blocks.0.0.weight") == "model.diffusion_model.input_blocks.0.0.weight"


@pytest.mark.parametrize("hijacked", [True, False])
def test_sd15_borrow_is_zero_copy_and_equals_the_file(webui, hijacked):
    from lora_trainer.models.bundle import bundle_from_state_dict
    from lora_trainer.models.demo import demo_state_dict

    sd_model = webui.models.a1111_sd15(hijacked=hijacked)
    webui.shared.sd_model = sd_model
    te = sd_model.cond_stage_model.wrapped.transformer if hijacked else sd_model.cond_stage_model.transformer
    tok = te.text_model.embeddings.token_embedding
    tok_weight = tok.wrapped.weight if hijacked else tok.weight
    with host().borrow_bundle() as bundle:
        assert bundle.arch == "sd15" and bundle.name == "tiny-sd15" and bundle.prediction == "eps"
        assert storage(bundle.unet.input_blocks[0][0].weight) == storage(sd_model.model.diffusion_model.input_blocks[0][0].weight)
        ours = dict(bundle.unet.named_parameters())
        for name, p in sd_model.model.diffusion_model.named_parameters():
            assert ours[name].data_ptr() == p.data_ptr(), name
        assert storage(bundle.vae.encoder.conv_in.weight) == storage(sd_model.first_stage_model.encoder.conv_in.weight)
        te_ours = bundle.text_encoders[0][1]
        assert bundle.text_encoders[0][0] == "lora_te"
        assert te_ours.text_model.embeddings.token_embedding.weight.data_ptr() == tok_weight.data_ptr()
        reference = bundle_from_state_dict(demo_state_dict("sd15", 0, torch.float32))
        for (k, a), (_, b) in zip(bundle.unet.state_dict().items(), reference.unet.state_dict().items()):
            assert torch.equal(a, b), k


def test_sdxl_borrow_is_zero_copy_with_bigg_views(webui):
    sd_model = webui.models.a1111_sdxl(hijacked=True)
    webui.shared.sd_model = sd_model
    bigg = sd_model.conditioner.embedders[1].wrapped.model
    in_proj = getattr(bigg.transformer.resblocks, "0").attn.in_proj_weight
    C = in_proj.shape[1]
    with host().borrow_bundle() as bundle:
        assert bundle.arch == "sdxl"
        assert [p for p, _ in bundle.text_encoders] == ["lora_te1", "lora_te2"]
        te2 = bundle.text_encoders[1][1]
        layer = te2.text_model.encoder.layers[0].self_attn
        assert storage(layer.q_proj.weight) == storage(in_proj)
        assert layer.q_proj.weight.data_ptr() == in_proj.data_ptr()
        assert layer.k_proj.weight.data_ptr() == in_proj.data_ptr() + C * C * in_proj.element_size()
        assert storage(te2.text_projection.weight) == storage(bigg.text_projection)
        te1 = bundle.text_encoders[0][1]
        assert te1.text_model.embeddings.token_embedding.weight.data_ptr() == \
            sd_model.conditioner.embedders[0].wrapped.transformer.text_model.embeddings.token_embedding.wrapped.weight.data_ptr()
        # the borrowed model computes: one UNet call at 64 px
        cond = bundle.encode_prompts(["a cat"], 64, 64)
        x = torch.randn(1, 4, 8, 8)
        assert bundle.predict(x, torch.tensor([500.0]), cond.context, cond.y).shape == (1, 4, 8, 8)


# ---- Forge -----------------------------------------------------------------------------------


@pytest.fixture
def forge_backend(monkeypatch):
    calls = []
    mm = types.SimpleNamespace(unload_all_models=lambda: calls.append("unload"), soft_empty_cache=lambda: calls.append("empty"),
                               get_torch_device=lambda: torch.device("cpu"))
    monkeypatch.setitem(sys.modules, "backend", types.SimpleNamespace(memory_management=mm))
    monkeypatch.setitem(sys.modules, "backend.memory_management", mm)
    return calls


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_forge_clones_clean_weights_out_of_inference_mode(webui, forge_backend, arch):
    from lora_trainer.models.bundle import bundle_from_state_dict
    from lora_trainer.models.demo import demo_state_dict

    sd_model = webui.models.forge(arch)
    webui.shared.sd_model = sd_model
    kmodel = sd_model.forge_objects.unet.model
    conv = kmodel.diffusion_model.input_blocks[0][0]
    clean = conv.weight
    with torch.inference_mode():  # Forge merged a LoRA: a new Parameter, the clean one in the backup
        merged = torch.nn.Parameter(clean + 0.5, requires_grad=False)
    conv._parameters["weight"] = merged
    kmodel.lora_loader.backup["diffusion_model.input_blocks.0.0.weight"] = clean
    before = snapshot(webui.models.webui_modules(sd_model))
    h = host()
    with h.borrow_bundle() as bundle:
        assert h.name == "forge" and forge_backend[:1] == ["unload"]
        assert torch.equal(bundle.unet.input_blocks[0][0].weight, clean)
        assert all(not t.is_inference() for m in bundle.modules().values() for t in m.state_dict().values())
        reference = bundle_from_state_dict(demo_state_dict(arch, 0, torch.float32))
        for name in ("unet", "vae", *[p for p, _ in reference.text_encoders]):
            for (k, a), b in zip(bundle.modules()[name].state_dict().items(), reference.modules()[name].state_dict().values()):
                assert torch.equal(a, b), (name, k)
        # gradients flow through the clones to a trainable input
        x = torch.randn(1, 4, 8, 8, requires_grad=True)
        cond = bundle.encode_prompts(["a"], 64, 64)
        bundle.predict(x, torch.tensor([10.0]), cond.context, cond.y).sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
    assert snapshot(webui.models.webui_modules(sd_model)) == before
    assert sd_model.current_lora_hash != str([])  # the next generation re-applies (or removes) its LoRAs


def test_forge_neo_clean_weights_come_from_its_patchers_backup(webui, forge_backend):
    # Neo has no LoraLoader: its ComfyUI-style ModelPatcher keeps (weight, inplace_update) tuples
    import collections

    Dimension = collections.namedtuple("Dimension", ["weight", "inplace_update"])
    sd_model = webui.models.forge("sd15")
    webui.shared.sd_model = sd_model
    del sd_model.forge_objects.unet.model.lora_loader
    conv = sd_model.forge_objects.unet.model.diffusion_model.input_blocks[0][0]
    fc1 = sd_model.forge_objects.clip.cond_stage_model["clip_l"].transformer.text_model.encoder.layers[0].mlp.fc1
    clean_conv, clean_fc1 = conv.weight, fc1.weight
    with torch.inference_mode():
        conv._parameters["weight"] = torch.nn.Parameter(clean_conv + 0.5, requires_grad=False)
        fc1._parameters["weight"] = torch.nn.Parameter(clean_fc1 - 0.5, requires_grad=False)
    sd_model.forge_objects.unet.backup = {"diffusion_model.input_blocks.0.0.weight": Dimension(clean_conv, False)}
    sd_model.forge_objects.clip.patcher = types.SimpleNamespace(
        backup={"clip_l.transformer.text_model.encoder.layers.0.mlp.fc1.weight": Dimension(clean_fc1, False)})
    with host().borrow_bundle() as bundle:
        assert torch.equal(bundle.unet.input_blocks[0][0].weight, clean_conv)
        assert torch.equal(bundle.text_encoders[0][1].text_model.encoder.layers[0].mlp.fc1.weight, clean_fc1)


@pytest.mark.parametrize("storage_dtype,word", [("nf4", "NF4"), ("gguf", "GGUF"), (torch.float8_e4m3fn, "float8_e4m3fn")])
def test_forge_refuses_quantized_models(webui, forge_backend, storage_dtype, word):
    webui.shared.sd_model = webui.models.forge("sd15", storage_dtype=storage_dtype)
    with pytest.raises(StudioError) as e, host().borrow_bundle():
        pass
    assert word in e.value.message and "fp16" in e.value.fix
    assert forge_backend == []  # refused before anything moved


def test_a_forge_of_the_forge_1_lineage_is_named_before_anything_moves(webui, monkeypatch):
    # Forge Classic and reForge: forge_objects and modules_forge, but ldm_patched instead of backend/
    monkeypatch.delitem(sys.modules, "backend", raising=False)
    monkeypatch.setitem(sys.modules, "ldm_patched", types.ModuleType("ldm_patched"))
    webui.shared.sd_model = webui.models.forge("sd15")
    with pytest.raises(StudioError) as e, host().borrow_bundle():
        pass
    assert "Forge Classic or reForge" in e.value.message and "standalone studio" in e.value.fix
    assert "backend" not in sys.modules  # no Forge 2 import was tried


# ---- A1111: merged LoRAs, refusals, restoring ------------------------------------------------


def write_lora(folder: Path, name: str, size: int = 10) -> Path:
    path = folder / f"{name}.safetensors"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return path


def test_merged_lora_is_taken_out_before_borrowing(webui):
    from lora_trainer.host.base import GenerationRequest

    sd_model = webui.models.a1111_sd15()
    webui.shared.sd_model = sd_model
    conv = sd_model.model.diffusion_model.input_blocks[0][0]
    clean = conv.weight.detach().clone()
    write_lora(webui.lora_dir, "style")
    h = host()
    h.generate(GenerationRequest("a cat <lora:style:1>", width=64, height=64))
    assert not torch.equal(conv.weight, clean) and conv.network_current_names  # the WebUI left it merged
    for p in sd_model.model.diffusion_model.parameters():
        p.requires_grad_(True)  # A1111 never freezes the UNet: the restore must run under no_grad
    with h.borrow_bundle() as bundle:
        assert torch.equal(bundle.unet.input_blocks[0][0].weight, clean)
        assert conv.network_current_names == ()
        assert webui.networks.loaded_networks == []
    assert all(p.requires_grad for p in sd_model.model.diffusion_model.parameters())
    # the next generation with the same LoRA merges it again: same image as before borrowing
    again = h.generate(GenerationRequest("a cat <lora:style:1>", width=64, height=64))[0]
    calls = webui.processing.calls
    assert calls[-1]["value"] == calls[0]["value"] and again.size == (8, 8)


def test_hypernetworks_dropped_and_lowvram_refused(webui):
    webui.shared.sd_model = webui.models.a1111_sd15()
    webui.shared.loaded_hypernetworks.extend(["hn1", "hn2"])
    with host().borrow_bundle():
        assert webui.shared.loaded_hypernetworks == []
    webui.shared.cmd_opts.lowvram = True
    with pytest.raises(StudioError) as e, host().borrow_bundle():
        pass
    assert "--lowvram" in e.value.message and "--medvram" in e.value.fix


@pytest.mark.parametrize("exit_with", [RuntimeError, Cancelled])
@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_webui_modules_come_back_exactly(webui, exit_with, arch):
    sd_model = webui.models.a1111_sd15() if arch == "sd15" else webui.models.a1111_sdxl()
    webui.shared.sd_model = sd_model
    mods = webui.models.webui_modules(sd_model)
    for p in sd_model.model.diffusion_model.parameters():
        p.requires_grad_(True)  # as A1111 leaves them
    sd_model.model.diffusion_model.out.train()  # a mixed mode to keep
    before, before_values = snapshot(mods), values(mods)
    with pytest.raises(exit_with), host().borrow_bundle() as bundle:
        bundle.requires_grad_(True)
        for m in bundle.modules().values():
            m.train()
        for m in mods:  # something moves the WebUI's own modules meanwhile
            m.requires_grad_(False)
            m.eval()
        sd_model.first_stage_model.double()  # (lossless, so the values can be compared after)
        raise exit_with()
    assert snapshot(mods) == before
    assert same_values(values(mods), before_values)


# ---- the memory estimate ---------------------------------------------------------------------


def test_vram_estimate_numbers():
    from lora_trainer.train.memory import GiB, estimate_vram, vram_parts, vram_problem

    sd15 = TrainConfig.sd15_defaults()
    sdxl = TrainConfig.sdxl_defaults()
    parts = vram_parts("sd15", sd15)
    assert parts.weights == int(2 * (860e6 + 123e6 + 84e6))
    assert parts.activations == int(3.8 * 2 * GiB)  # (3.5 UNet + 0.3 TE) GiB per 512 px sample x batch 2
    assert parts.network == int(8 * 0.56e6 * 16) and parts.optimizer == int(2 * 0.56e6 * 16)  # AdamW8bit
    assert round(estimate_vram("sd15", sd15) / GiB, 2) == 10.47  # 1.99 weights + 0.08 LoRA+AdamW8bit + 7.6 activations + 0.8 context
    assert round(estimate_vram("sd15", sd15.replace(gradient_checkpointing=True)) / GiB, 2) == 5.87
    assert round(estimate_vram("sdxl", sdxl) / GiB, 2) == round(vram_parts("sdxl", sdxl).total / GiB, 2)
    # batch is linear in the activations; the resolution quadratic
    a1 = vram_parts("sd15", sd15.replace(train_batch_size=1)).activations
    assert vram_parts("sd15", sd15.replace(train_batch_size=4)).activations == pytest.approx(4 * a1, abs=4)
    assert vram_parts("sd15", sd15.replace(train_batch_size=1, resolution=1024)).activations == pytest.approx(4 * a1, abs=4)
    # fits: no problem; does not fit: says the numbers and what to change, in order
    assert vram_problem("sd15", sd15, 24 * GiB, 0) is None
    err = vram_problem("sd15", sd15, 4 * GiB, int(2.0 * GiB), "cuda:0")
    assert "10.5 GB" in err.message and "6.0 GB are available on cuda:0" in err.message
    assert err.fix.startswith("To fit: turn on gradient checkpointing (about 5.9 GB)")


def test_vram_check_runs_on_cuda_with_the_borrowers_check(webui, monkeypatch):
    from lora_trainer.host.base import BorrowRequest
    from lora_trainer.host.webui import WebUIHost
    from lora_trainer.train.memory import GiB, vram_problem

    webui.shared.sd_model = webui.models.a1111_sd15()
    h = WebUIHost(device="cpu", free_vram=lambda d: 1 * GiB)
    asked = []

    def check(arch, free, resident, where):
        asked.append((arch, free, where))
        return vram_problem(arch, TrainConfig.sd15_defaults(), free, resident, where)

    with h.borrow_bundle(BorrowRequest(memory_check=check)):
        pass  # on the CPU nothing is checked
    assert asked == []
    monkeypatch.setattr(h, "device", lambda: torch.device("cuda:0"))
    with pytest.raises(StudioError) as e, h.borrow_bundle(BorrowRequest(memory_check=check)):
        pass
    assert asked == [("sd15", 1 * GiB, "cuda:0")]
    assert "GPU memory" in e.value.message and "gradient checkpointing" in e.value.fix
    with h.borrow_bundle():  # a borrower without a check (a test, a tool) is not checked
        pass


# ---- a real training job through wrap_job ----------------------------------------------------


def make_project(root: Path):
    from lora_trainer.demo.dataset import make_demo_dataset
    from lora_trainer.project import create_project

    project = create_project(root, "alice")
    make_demo_dataset(project.dataset_dir, count=2, size=64)
    return project


def fast_config(**changes) -> TrainConfig:
    return TrainConfig.sd15_defaults().replace(**{**FAST, "datasets": [DatasetFolder(repeats=2)], **changes})


def test_training_holds_the_lock_drives_state_and_restores(webui, tmp_path):
    from lora_trainer.host.base import GenerationRequest
    from lora_trainer.train.run import train_job

    sd_model = webui.models.a1111_sd15()
    webui.shared.sd_model = sd_model
    mods = webui.models.webui_modules(sd_model)
    h = host()
    image_before = h.generate(GenerationRequest("a cat", width=64, height=64))[0]
    before, before_values = snapshot(mods), values(mods)
    project = make_project(tmp_path / "studio")
    config = fast_config(max_train_epochs=2, sample_prompts=["a cat"], sample_every_n_epochs=1)
    seen = []

    def watch(event: ProgressEvent):
        if "step" in event.extra:
            b = h._borrow
            seen.append((webui.lock.locked(), webui.shared.state.job_count, webui.shared.state.job_no,
                         webui.shared.state.textinfo, b is not None and b.vae_parked))

    lists_before = len(webui.networks.list_calls)
    fn = h.wrap_job("Training alice", lambda p, c: train_job(project, config, h, p, c), config=config, project=project)
    result = fn(watch, CancelToken())
    assert not webui.lock.locked()
    assert seen and all(locked for locked, *_ in seen)
    assert seen[-1][1] == result.total_steps == 4 and seen[-1][2] == 4  # 2 images x 2 repeats / batch 2 x 2 epochs
    assert "Training alice: epoch 2" in seen[-1][3]
    assert all(parked for *_, parked in seen)  # latents cached, so the VAE waits on the park device
    state = webui.shared.state
    assert state.begin_count == 1 and state.end_count == 1 and state.job == ""
    # samples went through the WebUI's pipeline inside the lock, with the new epoch file
    sample_calls = [c for c in webui.processing.calls if "<lora:alice-" in c["prompt"]]
    assert [c["prompt"] for c in sample_calls] == ["a cat <lora:alice-01:1>", "a cat <lora:alice-02:1>"]
    assert all(c["locked"] and c["override_settings"] == {"sd_lora": "None"} for c in sample_calls)
    # outputs: <Lora>/<project>/<project>-NN.safetensors with a user-metadata card each
    out = webui.lora_dir / "alice"
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["alice-01.safetensors", "alice-02.safetensors"]
    card = json.loads((out / "alice-01.json").read_text())
    assert card["sd version"] == "SD1" and card["preferred weight"] == 1.0 and "activation text" in card
    assert len(webui.networks.list_calls) > lists_before
    # the WebUI got back exactly what it had, and makes the same image
    assert snapshot(mods) == before and same_values(values(mods), before_values)
    assert sd_model.model.diffusion_model.input_blocks[0][0].network_current_names == ()
    image_after = h.generate(GenerationRequest("a cat", width=64, height=64))[0]
    assert image_after.tobytes() == image_before.tobytes()


def test_webui_interrupt_cancels_training_and_restores(webui, tmp_path):
    from lora_trainer.train.run import train_job

    sd_model = webui.models.a1111_sd15()
    webui.shared.sd_model = sd_model
    mods = webui.models.webui_modules(sd_model)
    before = snapshot(mods)
    h = host()
    project = make_project(tmp_path / "studio")
    config = fast_config(max_train_epochs=3)

    def press_interrupt(event: ProgressEvent):
        if event.extra.get("step") == 1:
            webui.shared.state.interrupt()  # the WebUI's Interrupt button

    cancel = CancelToken()
    fn = h.wrap_job("Training alice", lambda p, c: train_job(project, config, h, p, c), config=config, project=project)
    with pytest.raises(Cancelled):
        fn(press_interrupt, cancel)
    assert cancel.cancelled and not webui.lock.locked()
    assert snapshot(mods) == before
    assert webui.shared.state.interrupted is False and webui.shared.state.end_count == 1


# ---- LoRA files: refresh and stale copies ----------------------------------------------------


def test_rewritten_lora_is_not_left_merged(webui):
    import os

    from lora_trainer.host.base import GenerationRequest

    sd_model = webui.models.a1111_sd15()
    webui.shared.sd_model = sd_model
    h = host()
    path = write_lora(webui.lora_dir / "alice", "alice-01", size=10)
    req = GenerationRequest("x <lora:alice-01:1>", width=64, height=64)
    h.generate(req)
    first = webui.processing.calls[-1]["value"]
    path.write_bytes(b"y" * 20)  # a new run wrote the same name
    os.utime(path, (path.stat().st_mtime + 5, path.stat().st_mtime + 5))
    h.refresh_loras()
    assert "alice-01" not in webui.networks.networks_in_memory
    assert sd_model.model.diffusion_model.input_blocks[0][0].network_current_names == ()
    h.generate(req)
    assert webui.processing.calls[-1]["value"] != first  # the new file's delta, not the old one's


def test_user_metadata_keeps_what_the_user_wrote(tmp_path):
    from lora_trainer.host.webui import write_user_metadata

    lora = tmp_path / "alice-01.safetensors"
    lora.write_bytes(b"x")
    lora.with_suffix(".json").write_text(json.dumps({"notes": "mine", "preferred weight": 0.7}))
    path = write_user_metadata(lora, "alice, 1girl", "sdxl", "LoRA Studio: alice")
    data = json.loads(path.read_text())
    assert data == {"notes": "mine", "preferred weight": 0.7, "description": "LoRA Studio: alice", "sd version": "SDXL",
                    "activation text": "alice, 1girl", "negative text": ""}


def test_every_gpu_job_of_the_tab_holds_the_queue_lock_and_drives_the_progress_bar(webui, tmp_path):
    from lora_trainer.ui.context import StudioContext

    ctx = StudioContext.for_root(tmp_path / "studio", host=host())
    seen = {}

    def work(kind):
        def run(progress, cancel):
            seen[kind] = (webui.lock.locked(), webui.shared.state.job_count, webui.shared.state.textinfo)
            return kind
        return run

    for kind, gpu in [("tag", True), ("caption", True), ("dedupe", True), ("grid", True), ("import", False)]:
        job = ctx.submit(kind, f"{kind} alice", work(kind), gpu=gpu)
        assert job.wait(30) and job.result == kind
    for kind in ("tag", "caption", "dedupe", "grid"):
        locked, job_count, text = seen[kind]
        assert locked and job_count == 1000 and text == f"{kind} alice", kind
    assert seen["import"][0] is False  # files only: the WebUI stays free
    assert not webui.lock.locked()
    # a grid job generates through the WebUI inside its own hold of the (not re-entrant) queue lock
    from lora_trainer.host.base import GenerationRequest

    webui.shared.sd_model = webui.models.a1111_sd15()
    job = ctx.submit("grid", "grid alice", lambda p, c: ctx.host.generate(GenerationRequest("a dog", width=64, height=64)), gpu=True)
    assert job.wait(30) and len(job.result) == 1 and webui.processing.calls[-1]["locked"]


def test_the_host_is_told_of_each_saved_epoch_and_writes_its_card(webui, tmp_path):
    from lora_trainer.host.base import SavedLora

    lora = webui.lora_dir / "alice" / "alice-03.safetensors"
    lora.parent.mkdir(parents=True)
    lora.write_bytes(b"x")
    lists_before = len(webui.networks.list_calls)
    host().on_lora_saved(SavedLora(lora, "alice", "sd15", "alice \\(cosplay\\)"))
    card = json.loads(lora.with_suffix(".json").read_text())
    assert card["activation text"] == "alice \\(cosplay\\)" and card["sd version"] == "SD1"
    assert card["description"] == "LoRA Studio: alice, alice-03"
    assert len(webui.networks.list_calls) == lists_before + 1  # rescanned: the file is usable at once


# ---- generation and captions -----------------------------------------------------------------


def test_generate_through_processing(webui):
    from lora_trainer.host.base import GenerationRequest, infotext_of

    webui.shared.sd_model = webui.models.a1111_sd15()
    images = host().generate(GenerationRequest("a dog", seed=5, width=64, height=128, batch_size=2))
    assert [im.size for im in images] == [(8, 16), (8, 16)]
    assert "Seed: 6" in infotext_of(images[1])
    call = webui.processing.calls[-1]
    assert call["locked"] and call["prompt"] == "a dog"


def test_blip_caption_fn(webui):
    from PIL import Image

    class Interrogator:
        blip_model = None
        running_on_cpu = True
        dtype = "clip's"

        def load_blip_model(self):
            return torch.nn.Linear(1, 1)

        def generate_caption(self, img):
            assert self.dtype == torch.float32
            return f"a photo {img.size[0]}"

        def send_blip_to_ram(self):
            self.sent = True

    webui.shared.interrogator = it = Interrogator()
    fn = host().caption_fn()
    assert fn([Image.new("RGB", (4, 4)), Image.new("RGBA", (6, 6))]) == ["a photo 4", "a photo 6"]
    assert it.dtype == "clip's" and it.sent and not webui.lock.locked()


def test_a_webui_without_blip_says_so_and_the_tab_offers_coca(webui, monkeypatch):
    from PIL import Image

    from lora_trainer.host import webui_compat as W

    assert W.has_blip()
    monkeypatch.setitem(sys.modules, "modules.interrogate", None)  # Forge Neo: no modules/interrogate.py
    assert not W.has_blip()
    with pytest.raises(StudioError, match="no BLIP captioner") as e:
        host().caption_fn()([Image.new("RGB", (4, 4))])
    assert "CoCa" in e.value.fix and not webui.lock.locked()


def test_checkpoint_prefixes_cover_every_tensor(webui):
    """The WebUI layouts give exactly the tensors a single-file checkpoint of the model has."""
    from lora_trainer.host import webui_compat as W
    from lora_trainer.models.demo import demo_state_dict

    for arch, sd_model in (("sd15", webui.models.a1111_sd15()), ("sdxl", webui.models.a1111_sdxl())):
        got = W.borrowed_tensors(W.model_parts(sd_model, W.A1111, arch))
        want = {k for k in demo_state_dict(arch, 0) if k.startswith((ckpt.UNET_PREFIX, ckpt.VAE_PREFIX, "cond_stage_model.", "conditioner."))}
        want.discard(ckpt.SD15_TE_PREFIX + "text_model.embeddings.position_ids")
        want.discard(ckpt.SDXL_TE1_PREFIX + "text_model.embeddings.position_ids")
        assert set(got) == want, arch

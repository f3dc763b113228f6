"""LoRA files: save/load round trips, kohya metadata and hashes, foreign files, bad files, apply, lora-info."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from lora_trainer.cli import main as cli_main
from lora_trainer.errors import StudioError
from lora_trainer.network import (
    LoraMetadata,
    NetworkConfig,
    apply_loras,
    create_network,
    file_model_hash,
    load_weights,
    network_from_file,
    read_lora_file,
    save_network,
)
from lora_trainer.progress import ProgressEvent
from tests.test_network import _snapshot, _unet_inputs, tiny_bundle


def trained_like(network, seed=0, std=0.02):
    """Give lora_up non-zero values, as after some training."""
    torch.manual_seed(seed)
    for _, lora in network.loras():
        nn.init.normal_(lora.lora_up.weight, std=std)
    return network


@pytest.fixture(scope="module")
def sd15():
    return tiny_bundle("sd15")


@pytest.fixture(scope="module")
def sdxl():
    return tiny_bundle("sdxl")


def _metadata(arch="sd15"):
    return LoraMetadata(
        arch=arch,
        session_id=1234,
        training_started_at=1700000000.5,
        epoch=3,
        steps=300,
        learning_rate=5e-4,
        unet_lr=5e-4,
        text_encoder_lr=1e-4,
        optimizer="bitsandbytes.optim.adamw.AdamW8bit(weight_decay=0.1,betas=[0.9,0.99])",
        lr_scheduler="cosine_with_restarts",
        max_train_steps=1000,
        num_epochs=10,
        mixed_precision="fp16",
        seed=42,
        resolution=(512, 512),
        enable_bucket=True,
        tag_frequency={"10_mychar": {"1girl": 25, "solo": 20, "mychar": 25}},
        dataset_dirs={"10_mychar": {"n_repeats": 10, "img_count": 25}},
        bucket_info={"buckets": {"0": {"resolution": [512, 512], "count": 250}}, "mean_img_ar_error": 0.0},
        sd_model_name="model.safetensors",
        clip_skip=2,
    )


# ---------------------------------------------------------------------------------------------
# Save


def test_save_read_round_trip(tmp_path, sd15):
    net = trained_like(create_network(sd15, NetworkConfig(dim=4, alpha=2, conv_dim=2, conv_alpha=1)))
    path = tmp_path / "mychar-03.safetensors"
    saved = save_network(net, path, _metadata())
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left nothing behind
    lora = read_lora_file(path)
    sd = net.state_dict()
    assert set(lora.modules) == {k.split(".")[0] for k in sd}
    assert lora.dtypes == ["float16"] and lora.arch == "sd15" and lora.unknown_keys == []
    with safe_open(str(path), "pt") as f:
        assert set(f.keys()) == set(sd)
        for name in f.keys():  # noqa: SIM118
            t = f.get_tensor(name)
            assert t.dtype == torch.float16 and torch.equal(t, sd[name].to(torch.float16)), name
            if name.endswith(".alpha"):
                assert t.shape == ()
        header = f.metadata()
    assert header == saved.header == lora.metadata
    assert all(isinstance(v, str) for v in header.values())
    # loading back gives the same network, up to the fp16 rounding of the save
    back, report = network_from_file(sd15, path)
    assert report.unknown_keys == [] and report.loaded == len(lora.modules)
    for name, tensor in back.state_dict().items():
        assert torch.equal(tensor, sd[name].to(torch.float16).to(torch.float32)), name


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_save_precisions(tmp_path, sd15, precision, dtype):
    net = trained_like(create_network(sd15, NetworkConfig(dim=2)))
    path = tmp_path / f"p-{precision}.safetensors"
    save_network(net, path, precision=precision)
    with safe_open(str(path), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {dtype}  # noqa: SIM118
    assert read_lora_file(path).dtypes == [str(dtype).removeprefix("torch.")]
    with pytest.raises(StudioError, match="fp8"):
        save_network(net, tmp_path / "x.safetensors", precision="fp8")


def test_metadata_is_kohyas(tmp_path, sd15):
    net = create_network(sd15, NetworkConfig(dim=4, alpha=2, conv_dim=2, conv_alpha=1))
    path = tmp_path / "mychar-03.safetensors"
    h = save_network(net, path, _metadata()).header
    assert h["ss_output_name"] == "mychar-03" and h["modelspec.title"] == "mychar-03"
    assert h["ss_base_model_version"] == "sd_v1" and h["ss_v2"] == "False"
    assert h["ss_network_module"] == "networks.lora"
    assert h["ss_network_dim"] == "4" and h["ss_network_alpha"] == "2.0"
    assert json.loads(h["ss_network_args"]) == {"conv_dim": "2", "conv_alpha": "1", "dropout": None}
    assert json.loads(h["ss_tag_frequency"]) == {"10_mychar": {"1girl": 25, "solo": 20, "mychar": 25}}
    assert json.loads(h["ss_dataset_dirs"]) == {"10_mychar": {"n_repeats": 10, "img_count": 25}}
    assert json.loads(h["ss_bucket_info"])["buckets"]["0"] == {"resolution": [512, 512], "count": 250}
    assert h["ss_resolution"] == "(512, 512)" and h["ss_epoch"] == "3" and h["ss_steps"] == "300"
    assert h["ss_learning_rate"] == "0.0005" and h["ss_unet_lr"] == "0.0005" and h["ss_text_encoder_lr"] == "0.0001"
    assert h["ss_clip_skip"] == "2" and h["ss_max_token_length"] == "None" and h["ss_seed"] == "42"
    assert h["ss_sd_model_name"] == "model.safetensors" and "ss_vae_name" not in h
    assert h["ss_session_id"] == "1234" and h["ss_training_started_at"] == "1700000000.5"
    float(h["ss_training_finished_at"])
    assert h["modelspec.sai_model_spec"] == "1.0.1"
    assert h["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert h["modelspec.implementation"] == "diffusers"
    assert h["modelspec.resolution"] == "512x512" and h["modelspec.prediction_type"] == "epsilon"
    assert h["modelspec.encoder_layer"] == "2"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", h["modelspec.date"])
    assert re.fullmatch(r"[0-9a-f]{64}", h["sshs_model_hash"]) and re.fullmatch(r"[0-9a-f]{8}", h["sshs_legacy_hash"])
    plain = save_network(create_network(sd15, NetworkConfig(dim=4)), tmp_path / "plain.safetensors").header
    assert "ss_network_args" not in plain and plain["ss_bucket_info"] == "null"


def test_sdxl_metadata(tmp_path, sdxl):
    h = save_network(create_network(sdxl, NetworkConfig(dim=2)), tmp_path / "xl.safetensors").header
    assert h["ss_base_model_version"] == "sdxl_base_v1-0"
    assert h["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert h["modelspec.implementation"] == "https://github.com/Stability-AI/generative-models"
    assert h["modelspec.resolution"] == "1024x1024"


def _independent_tensor_bytes(path) -> bytes:
    """kohya's rule, by hand: all tensors share one dtype, so the data is every tensor's raw bytes in name order."""
    with safe_open(str(path), "pt") as f:
        names = sorted(f.keys())
        chunks = []
        for name in names:
            t = f.get_tensor(name)
            raw = t.view(torch.int16) if t.dtype in (torch.float16, torch.bfloat16) else t
            chunks.append(raw.contiguous().numpy().tobytes())
    return b"".join(chunks)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_model_hash_is_sha256_of_tensor_bytes(tmp_path, sd15, precision):
    net = trained_like(create_network(sd15, NetworkConfig(dim=4, conv_dim=2)))
    path = tmp_path / "h.safetensors"
    saved = save_network(net, path, _metadata(), precision=precision)
    want = hashlib.sha256(_independent_tensor_bytes(path)).hexdigest()
    assert saved.model_hash == want == saved.header["sshs_model_hash"]
    assert file_model_hash(path) == want  # what A1111 computes from the file when the header has none
    assert saved.legacy_hash == hashlib.sha256(b"").hexdigest()[:8]  # a file under 1 MiB: kohya's quirk


def test_legacy_hash_over_1mib(tmp_path, sd15):
    """Above 1 MiB the legacy hash covers bytes [1 MiB, 1 MiB + 64 KiB) of kohya's in-memory file."""
    from safetensors.torch import save

    from lora_trainer.network.io import network_state_dict

    net = trained_like(create_network(sd15, NetworkConfig(dim=64, alpha=32, conv_dim=64)))
    saved = save_network(net, tmp_path / "big.safetensors", _metadata(), precision="fp32")
    buffer = save(network_state_dict(net, "fp32"), {k: v for k, v in saved.header.items() if k.startswith("ss_")})
    assert len(buffer) > 0x110000
    assert saved.legacy_hash == hashlib.sha256(buffer[0x100000:0x110000]).hexdigest()[:8]


# ---------------------------------------------------------------------------------------------
# Files from other trainers


def _write(path, tensors, metadata=None):
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def test_hand_built_sd15_kohya_file_lands_on_expected_modules(tmp_path, sd15):
    unet, te = sd15.unet, sd15.text_encoders[0][1]
    g = torch.Generator().manual_seed(0)
    to_q = unet.input_blocks[1][1].transformer_blocks[0].attn1.to_q  # tiny SD1.5: down_blocks.0.attentions.0
    conv1 = unet.input_blocks[1][0].in_layers[2]
    q_proj = te.text_model.encoder.layers[0].self_attn.q_proj
    tensors = {
        # diffusers-style (kohya's SD1.5 naming), fp16, alpha 2 at rank 4
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight": torch.randn(4, 32, generator=g).half(),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight": torch.randn(32, 4, generator=g).half(),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha": torch.tensor(2.0).half(),
        # LoCon 3x3, no alpha: alpha = rank
        "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight": torch.randn(2, 32, 3, 3, generator=g).half(),
        "lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight": torch.randn(32, 2, 1, 1, generator=g).half(),
        # ldm-style name on SD1.5 (both WebUIs accept it)
        "lora_unet_input_blocks_1_1_proj_out.lora_down.weight": torch.randn(3, 32, 1, 1, generator=g).half(),
        "lora_unet_input_blocks_1_1_proj_out.lora_up.weight": torch.randn(32, 3, 1, 1, generator=g).half(),
        "lora_unet_input_blocks_1_1_proj_out.alpha": torch.tensor(1.0).half(),
        # LyCORIS "full" preset target kohya never writes
        "lora_unet_conv_in.lora_down.weight": torch.randn(2, 4, 3, 3, generator=g).half(),
        "lora_unet_conv_in.lora_up.weight": torch.randn(32, 2, 1, 1, generator=g).half(),
        # PEFT spelling on the text encoder
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_A.weight": torch.randn(4, 32, generator=g).half(),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_B.weight": torch.randn(32, 4, generator=g).half(),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha": torch.tensor(4.0).half(),
        # things we can not apply: a LoHa module and a layer this model lacks
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k.hada_w1_a": torch.randn(32, 2, generator=g).half(),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k.alpha": torch.tensor(1.0).half(),
        "lora_unet_down_blocks_9_attentions_0_proj_in.lora_down.weight": torch.randn(2, 32, generator=g).half(),
        "lora_unet_down_blocks_9_attentions_0_proj_in.lora_up.weight": torch.randn(32, 2, generator=g).half(),
    }
    path = _write(tmp_path / "kohya.safetensors", tensors, {"ss_base_model_version": "sd_v1"})
    events: list[ProgressEvent] = []
    net, report = network_from_file(sd15, path, multiplier=1.0, progress=events.append)
    lands = {key: net.target(key).module for key, _ in net.loras()}
    assert lands["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"] is to_q
    assert lands["lora_unet_down_blocks_0_resnets_0_conv1"] is conv1
    assert lands["lora_unet_down_blocks_0_attentions_0_proj_out"] is unet.input_blocks[1][1].proj_out
    assert lands["lora_unet_conv_in"] is unet.input_blocks[0][0]
    assert lands["lora_te_text_model_encoder_layers_0_self_attn_q_proj"] is q_proj
    mods = dict(net.loras())
    assert float(mods["lora_unet_down_blocks_0_resnets_0_conv1"].alpha) == 2.0  # missing alpha = rank
    assert mods["lora_unet_down_blocks_0_attentions_0_proj_out"].scale == pytest.approx(1 / 3)
    assert report.unknown_keys == sorted(
        [
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k.alpha",
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k.hada_w1_a",
            "lora_unet_down_blocks_9_attentions_0_proj_in.lora_down.weight",
            "lora_unet_down_blocks_9_attentions_0_proj_in.lora_up.weight",
        ]
    )
    assert any("4 tensors not applied" in e.log for e in events)
    # the delta on to_q is exactly up @ down * alpha / rank
    x = torch.randn(1, 3, 32)
    down = tensors["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight"].float()
    up = tensors["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight"].float()
    with torch.no_grad():
        base = to_q(x)
        with net.attached():
            out = to_q(x)
    torch.testing.assert_close(out - base, x @ (up @ down).T * 0.5, atol=1e-4, rtol=1e-4)


def test_sdxl_diffusers_style_names_land_on_ldm_modules(tmp_path, sdxl):
    unet = sdxl.unet
    g = torch.Generator().manual_seed(1)
    # tiny SDXL has one res block per level: down_blocks.1.attentions.0 is input_blocks.3.1
    tensors = {
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight": torch.randn(2, 64, generator=g),
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight": torch.randn(64, 2, generator=g),
        "lora_unet_mid_block_attentions_0_proj_in.lora_down.weight": torch.randn(2, 128, generator=g),
        "lora_unet_mid_block_attentions_0_proj_in.lora_up.weight": torch.randn(128, 2, generator=g),
        "lora_unet_input_blocks_5_1_transformer_blocks_1_ff_net_2.lora_down.weight": torch.randn(2, 512, generator=g),
        "lora_unet_input_blocks_5_1_transformer_blocks_1_ff_net_2.lora_up.weight": torch.randn(128, 2, generator=g),
        "lora_te2_text_model_encoder_layers_2_mlp_fc2.lora_down.weight": torch.randn(2, 64, generator=g).bfloat16(),
        "lora_te2_text_model_encoder_layers_2_mlp_fc2.lora_up.weight": torch.randn(32, 2, generator=g).bfloat16(),
    }
    path = _write(tmp_path / "diffusers_xl.safetensors", tensors)
    lora = read_lora_file(path)
    assert lora.arch == "sdxl" and lora.dtypes == ["bfloat16", "float32"]
    net, report = network_from_file(sdxl, path)
    assert report.unknown_keys == []
    lands = {key: net.target(key).module for key, _ in net.loras()}
    assert lands["lora_unet_input_blocks_3_1_transformer_blocks_0_attn1_to_q"] is unet.input_blocks[3][1].transformer_blocks[0].attn1.to_q
    assert lands["lora_unet_middle_block_1_proj_in"] is unet.middle_block[1].proj_in
    assert lands["lora_unet_input_blocks_5_1_transformer_blocks_1_ff_net_2"] is unet.input_blocks[5][1].transformer_blocks[1].ff.net[2]
    assert lands["lora_te2_text_model_encoder_layers_2_mlp_fc2"] is sdxl.text_encoders[1][1].text_model.encoder.layers[2].mlp.fc2


# ---------------------------------------------------------------------------------------------
# Wrong and broken files


def test_wrong_architecture_is_refused_in_a_sentence(tmp_path, sd15, sdxl):
    xl = save_network(create_network(sdxl, NetworkConfig(dim=2)), tmp_path / "xl.safetensors").path
    with pytest.raises(StudioError, match=r"xl.safetensors is an SDXL LoRA, but the model is SD1.5") as e:
        network_from_file(sd15, xl)
    assert "SD1.5 LoRA" in e.value.fix
    v1 = save_network(create_network(sd15, NetworkConfig(dim=2)), tmp_path / "v1.safetensors").path
    with pytest.raises(StudioError, match="is an SD1.5 LoRA, but the model is SDXL"), apply_loras(sdxl, [(v1, 1.0)]):
        pass
    # real-width tensors decide even without metadata: a 2048-wide cross-attention key is SDXL
    fake = _write(
        tmp_path / "nometa.safetensors",
        {
            "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": torch.zeros(2, 2048),
            "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": torch.zeros(640, 2),
        },
    )
    assert read_lora_file(fake).arch == "sdxl"
    with pytest.raises(StudioError, match="SDXL LoRA"):
        network_from_file(sd15, fake)


def test_corrupt_and_truncated_files_name_the_file(tmp_path, sd15):
    good = save_network(trained_like(create_network(sd15, NetworkConfig(dim=2))), tmp_path / "good.safetensors").path
    data = good.read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) - 100])
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00not a safetensors file at all" * 10)
    (tmp_path / "empty.safetensors").write_bytes(b"")
    for name in ("truncated", "garbage", "empty"):
        with pytest.raises(StudioError, match=rf"{name}.safetensors is not a readable safetensors file") as e:
            read_lora_file(tmp_path / f"{name}.safetensors")
        assert "download or train it again" in e.value.fix
    with pytest.raises(StudioError, match="does not exist"):
        read_lora_file(tmp_path / "missing.safetensors")


def test_shape_mismatch_names_the_module(tmp_path, sd15):
    path = _write(
        tmp_path / "other.safetensors",
        {
            "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(2, 768),
            "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.zeros(3072, 2),
        },
    )
    with pytest.raises(StudioError, match="lora_te_text_model_encoder_layers_0_mlp_fc1 has down"):
        network_from_file(sd15, path)


# ---------------------------------------------------------------------------------------------
# Continue training, and apply for generation


def test_load_weights_into_existing_network(tmp_path, sd15):
    config = NetworkConfig(dim=4, alpha=2, conv_dim=2)
    src = trained_like(create_network(sd15, config), seed=7)
    path = save_network(src, tmp_path / "resume.safetensors", precision="fp32").path
    dst = create_network(sd15, config)
    report = load_weights(dst, path)
    assert report.loaded == len(list(dst.loras())) and report.missing_keys == [] and report.unknown_keys == []
    for name, tensor in dst.state_dict().items():
        assert torch.equal(tensor, src.state_dict()[name]), name
    with pytest.raises(StudioError, match="rank 4; the network has rank 8"):
        load_weights(create_network(sd15, NetworkConfig(dim=8, conv_dim=2)), path)
    # a plain LoRA file into a LoCon network: the LoCon modules are reported missing, the rest load
    plain = create_network(sd15, NetworkConfig(dim=4, alpha=2))
    report = load_weights(dst, save_network(plain, tmp_path / "plain.safetensors").path)
    assert report.loaded == len(list(plain.loras()))
    assert len(report.missing_keys) == len(list(dst.loras())) - len(list(plain.loras())) > 0
    assert all("resnets" in k or "samplers" in k for k in report.missing_keys)


def test_weights_that_match_no_module_are_refused_not_trained_from_scratch(tmp_path, sd15):
    path = _write(
        tmp_path / "elsewhere.safetensors",
        {
            "lora_unet_no_such_block_proj.lora_down.weight": torch.zeros(2, 8),
            "lora_unet_no_such_block_proj.lora_up.weight": torch.zeros(8, 2),
        },
    )
    with pytest.raises(StudioError, match="elsewhere.safetensors: none of its 1 modules is a module of this network") as e:
        load_weights(create_network(sd15, NetworkConfig(dim=2, alpha=1)), path)
    assert "leave 'network weights' empty" in e.value.fix


@pytest.mark.parametrize("mode", ["hooks", "merge"])
def test_apply_loras_and_restore(tmp_path, sd15, mode):
    a = save_network(trained_like(create_network(sd15, NetworkConfig(dim=4, alpha=4, conv_dim=2)), seed=1), tmp_path / "a.safetensors", precision="fp32")
    b = save_network(trained_like(create_network(sd15, NetworkConfig(dim=2, alpha=1)), seed=2), tmp_path / "b.safetensors", precision="fp32")
    x, t, ctx, _ = _unet_inputs(sd15)
    snap = _snapshot(sd15)
    with torch.no_grad():
        base = sd15.unet(x, t, ctx)
        # reference: the two networks hooked by hand at their weights
        na, _ = network_from_file(sd15, a.path, multiplier=0.8)
        nb, _ = network_from_file(sd15, b.path, multiplier=-0.5)
        with na.attached(), nb.attached():
            want = sd15.unet(x, t, ctx)
        with apply_loras(sd15, [(a.path, 0.8), (b.path, -0.5)], mode=mode) as applied:
            got = sd15.unet(x, t, ctx)
        after = sd15.unet(x, t, ctx)
    assert [p.model_hash for p in applied] == [a.model_hash, b.model_hash]
    assert (want - base).abs().max() > 1e-3
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert torch.equal(after, base)
    params = dict(sd15.unet.named_parameters())
    for name, (tensor, ptr, copy) in snap.items():
        if name in params:
            assert params[name] is tensor and tensor.data_ptr() == ptr and torch.equal(tensor, copy), name
    assert all(not m._forward_hooks for m in sd15.unet.modules())


def test_apply_loras_restores_after_an_error(tmp_path, sd15):
    a = save_network(trained_like(create_network(sd15, NetworkConfig(dim=2))), tmp_path / "a.safetensors")
    weight = sd15.unet.input_blocks[1][1].proj_in.weight
    for mode in ("hooks", "merge"):
        with pytest.raises(RuntimeError, match="boom"), apply_loras(sd15, [(a.path, 1.0)], mode=mode):
            raise RuntimeError("boom")
        assert sd15.unet.input_blocks[1][1].proj_in.weight is weight
        assert all(not m._forward_hooks for m in sd15.unet.modules())


# ---------------------------------------------------------------------------------------------
# lora-info


def test_lora_info_cli(tmp_path, sdxl, capsys):
    meta = _metadata("sdxl")
    meta.resolution = (1024, 1024)
    net = trained_like(create_network(sdxl, NetworkConfig(dim=4, alpha=2, conv_dim=2, conv_alpha=1)))
    path = save_network(net, tmp_path / "mychar-03.safetensors", meta).path
    assert cli_main(["lora-info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["arch"] == "sdxl" and info["type"] == "LoCon"
    assert (info["dim"], info["alpha"], info["conv_dim"], info["conv_alpha"]) == (4, 2.0, 2, 1.0)
    assert info["counts"] == net.counts() and info["precision"] == "fp16"
    assert info["hash_matches"] is True and info["epoch"] == 3 and info["steps"] == 300
    assert info["top_tags"][0] == ["1girl", 25] and info["images"] == 25
    assert info["base_model_version"] == "sdxl_base_v1-0" and info["resolution"] == "(1024, 1024)"
    assert cli_main(["lora-info", str(path)]) == 0
    text = capsys.readouterr().out
    assert "SDXL LoCon" in text and "dim 4, alpha 2; conv dim 2, conv alpha 1" in text and "1girl (25)" in text
    (tmp_path / "bad.safetensors").write_bytes(b"nope")
    assert cli_main(["lora-info", str(tmp_path / "bad.safetensors")]) == 2
    assert "bad.safetensors is not a readable safetensors file" in capsys.readouterr().err

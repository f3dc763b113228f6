"""Tiny random models in the same file formats as the real ones, built in code (no downloads).

- `write_tiny_tagger`: a WD-tagger folder (model.onnx NHWC float32 in, (N, n_tags) sigmoid scores
  out, plus selected_tags.csv). Its scores are a linear function of the mean B, G, R of the input,
  so a test can choose which tags fire by choosing the image colour.
- `write_conv_tagger`: a mid-size random conv net at a realistic 448 px input, for benchmarks.
- `write_tiny_open_clip`: a folder in the Hugging Face open_clip layout (open_clip_config.json +
  open_clip_model.safetensors) holding a tiny random CLIP or CoCa, loadable like a downloaded one
  (`lora_trainer.dataset.dedupe.load_open_clip(<folder>)`, on open_clip 2.20 as on 3.x).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

# ----------------------------------------------------------------------------------------------
# WD tagger (ONNX)

# (name, category): 4 ratings, general tags, then characters, as in the real CSVs
TINY_LABELS = [
    ("general", 9), ("sensitive", 9), ("questionable", 9), ("explicit", 9),
    ("red_theme", 0), ("green_theme", 0), ("blue_theme", 0), ("^_^", 0), ("long_hair", 0),
    ("hatsune_miku", 4), ("kirisame_marisa_(touhou)", 4),
]  # fmt: skip


def tiny_tagger_weights(
    n_tags: int = len(TINY_LABELS),
) -> tuple[np.ndarray, np.ndarray]:
    """(W (3, n_tags), b (n_tags,)) on the features (mean B, mean G, mean R) / 255.

    Rows follow TINY_LABELS. Each "<colour>_theme" tag is sigmoid(12 * (channel - 0.5)), so it
    fires above 0.35 only when that channel's mean is high; the kaomoji and long_hair follow red;
    the characters follow blue and green with a steeper slope. Ratings: general follows white.
    """
    W = np.zeros((3, n_tags), np.float32)
    b = np.zeros(n_tags, np.float32)
    B, G, R = 0, 1, 2  # BGR input order
    names = [n for n, _ in TINY_LABELS]

    def set_(name, channel, slope, centre):
        i = names.index(name)
        W[channel, i] = slope
        b[i] = -slope * centre

    set_("general", R, 4.0, 0.5)
    set_("red_theme", R, 12.0, 0.5)
    set_("green_theme", G, 12.0, 0.5)
    set_("blue_theme", B, 12.0, 0.5)
    set_("^_^", R, 10.0, 0.55)
    set_("long_hair", R, 8.0, 0.6)
    set_("hatsune_miku", B, 20.0, 0.6)
    set_("kirisame_marisa_(touhou)", G, 20.0, 0.6)
    return W, b


def tiny_tagger_probs(bgr_means: np.ndarray) -> np.ndarray:
    """What the tiny tagger outputs for (N, 3) mean B, G, R values in 0-255 (the numpy twin)."""
    W, b = tiny_tagger_weights()
    z = (np.asarray(bgr_means, np.float32) / 255.0) @ W + b
    return 1 / (1 + np.exp(-z))


def write_labels_csv(path: Path, labels=TINY_LABELS) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["tag_id", "name", "category", "count"])
        for i, (name, cat) in enumerate(labels):
            w.writerow([1000 + i, name, cat, 100])


def _save_onnx(graph, path: Path) -> None:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by onnxruntime >= 1.14
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def write_tiny_tagger(
    folder: Path, size: int = 32, fixed_batch: int | None = None
) -> Path:
    """A WD-tagger folder: input (N, size, size, 3) float32 BGR 0-255 -> sigmoid((mean/255) @ W + b)."""
    from onnx import TensorProto, helper, numpy_helper

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    W, b = tiny_tagger_weights()
    n = fixed_batch if fixed_batch is not None else "batch"
    nodes = [
        helper.make_node(
            "ReduceMean", ["input_1"], ["mean"], axes=[1, 2], keepdims=0
        ),  # (N, 3)
        helper.make_node("Mul", ["mean", "inv255"], ["feat"]),
        helper.make_node("MatMul", ["feat", "W"], ["logits0"]),  # (N, n_tags)
        helper.make_node("Add", ["logits0", "b"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["predictions_sigmoid"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_wd_tagger",
        [
            helper.make_tensor_value_info(
                "input_1", TensorProto.FLOAT, [n, size, size, 3]
            )
        ],
        [
            helper.make_tensor_value_info(
                "predictions_sigmoid", TensorProto.FLOAT, [n, len(TINY_LABELS)]
            )
        ],
        initializer=[
            numpy_helper.from_array(np.array(1 / 255, np.float32), "inv255"),
            numpy_helper.from_array(W, "W"),
            numpy_helper.from_array(b, "b"),
        ],
    )
    _save_onnx(graph, folder / "model.onnx")
    write_labels_csv(folder / "selected_tags.csv")
    return folder


def write_conv_tagger(
    folder: Path,
    size: int = 448,
    n_tags: int = 9000,
    widths=(32, 64, 128, 256),
    seed: int = 0,
) -> Path:
    """A random conv net with a WD tagger's contract (NHWC 448 in, n_tags sigmoid out) for benchmarks.

    Four stride-2 3x3 convs after a stride-4 stem, then global pooling and a dense head: a few
    GFLOPs per image, far less than a real ViT/ConvNeXt tagger (tens of GFLOPs).
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    inits = [numpy_helper.from_array(np.array([0, 3, 1, 2], np.int64), "perm_unused")]
    nodes = [
        helper.make_node("Transpose", ["input_1"], ["x0"], perm=[0, 3, 1, 2])
    ]  # NHWC -> NCHW
    c_in, x = 3, "x0"
    stem = True
    for i, c_out in enumerate(widths):
        k, stride = (4, 4) if stem else (3, 2)
        w = (
            rng.standard_normal((c_out, c_in, k, k))
            * np.sqrt(2 / (c_in * k * k))
            / (255 if stem else 1)
        ).astype(np.float32)
        inits += [
            numpy_helper.from_array(w, f"w{i}"),
            numpy_helper.from_array(np.zeros(c_out, np.float32), f"b{i}"),
        ]
        pads = [0, 0, 0, 0] if stem else [1, 1, 1, 1]
        nodes += [
            helper.make_node(
                "Conv",
                [x, f"w{i}", f"b{i}"],
                [f"c{i}"],
                strides=[stride, stride],
                pads=pads,
            ),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
        ]
        c_in, x, stem = c_out, f"r{i}", False
    head = (rng.standard_normal((c_in, n_tags)) / np.sqrt(c_in)).astype(np.float32)
    inits += [
        numpy_helper.from_array(head, "head"),
        numpy_helper.from_array(np.full(n_tags, -2.0, np.float32), "hb"),
    ]
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["gp"]),  # (N, C, 1, 1)
        helper.make_node("Flatten", ["gp"], ["flat"]),
        helper.make_node("MatMul", ["flat", "head"], ["l0"]),
        helper.make_node("Add", ["l0", "hb"], ["l1"]),
        helper.make_node("Sigmoid", ["l1"], ["predictions_sigmoid"]),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_wd_tagger",
        [
            helper.make_tensor_value_info(
                "input_1", TensorProto.FLOAT, ["batch", size, size, 3]
            )
        ],
        [
            helper.make_tensor_value_info(
                "predictions_sigmoid", TensorProto.FLOAT, ["batch", n_tags]
            )
        ],
        initializer=inits[1:],
    )
    _save_onnx(graph, folder / "model.onnx")
    labels = [("general", 9), ("sensitive", 9), ("questionable", 9), ("explicit", 9)]
    labels += [(f"tag_{i}", 0) for i in range(n_tags - 4 - 100)] + [
        (f"character_{i}", 4) for i in range(100)
    ]
    write_labels_csv(folder / "selected_tags.csv", labels)
    return folder


# ----------------------------------------------------------------------------------------------
# open_clip (CLIP and CoCa)

TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {
        "image_size": 64,
        "layers": 2,
        "width": 64,
        "head_width": 32,
        "patch_size": 16,
    },
    "text_cfg": {
        "context_length": 16,
        "vocab_size": 1000,
        "width": 32,
        "heads": 2,
        "layers": 1,
    },
}

# CoCa needs the real vocabulary size: generate() starts at token 49406 and stops at 49407.
TINY_COCA_CFG = {
    "embed_dim": 32,
    "vision_cfg": {
        "image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16,
        "attentional_pool": True, "attn_pooler_heads": 2, "output_tokens": True,
    },
    "text_cfg": {
        "context_length": 76, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1,
        "embed_cls": True, "output_tokens": True,
    },
    "multimodal_cfg": {"context_length": 76, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1, "attn_pooler_heads": 2},
    "custom_text": True,
}  # fmt: skip


def write_tiny_open_clip(
    folder: Path, cfg: dict = TINY_CLIP_CFG, seed: int = 0
) -> Path:
    """An open_clip model folder (config + random safetensors weights), as on the Hugging Face hub."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from lora_trainer.dataset.dedupe import folder_model_name

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "model_cfg": json.loads(json.dumps(cfg)),
        "preprocess_cfg": {
            "mean": list(open_clip.OPENAI_DATASET_MEAN),
            "std": list(open_clip.OPENAI_DATASET_STD),
        },
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=1))
    torch.manual_seed(seed)
    model = open_clip.create_model(folder_model_name(folder))  # no weights yet: random init of this config
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    return folder

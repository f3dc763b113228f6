"""Training math: LR schedules (hand numbers and transformers), noise, targets, weights, step counts."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from lora_trainer.models.schedule import NoiseSchedule
from lora_trainer.train import lr_schedules as lrs
from lora_trainer.train import noise as nz
from lora_trainer.train.steps import (
    FolderCount,
    balance_regularization,
    batches_per_epoch,
    plan_steps,
)

ACP = NoiseSchedule().alphas_cumprod()
ACP_ZT = NoiseSchedule(zero_terminal_snr=True).alphas_cumprod()


def numpy_acp() -> np.ndarray:
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    return np.cumprod(1 - betas)


# ---- LR schedules: hand-computed values ----------------------------------------------------------


def test_warmup_steps_follow_the_colab():
    assert lrs.warmup_steps_for("cosine_with_restarts", 0.05, 1000) == 50
    assert lrs.warmup_steps_for("linear", 0.05, 999) == 49  # int(), not round()
    assert lrs.warmup_steps_for("constant", 0.05, 1000) == 0  # kohya refuses warmup with constant
    assert lrs.warmup_steps_for("rex", 0.05, 1000, num_cycles=3) == 16  # round(50) // 3, per cycle


def test_cosine_with_restarts_hand_values():
    s = lrs.LRSchedule("cosine_with_restarts", total_steps=100, warmup_steps=10, num_cycles=3)
    assert s.lr_at(0, 1e-3) == 0.0  # transformers' warmup starts at 0
    assert s.lr_at(5, 1e-3) == pytest.approx(5e-4)
    assert s.lr_at(10, 1e-3) == pytest.approx(1e-3)
    assert s.lr_at(25, 1e-3) == pytest.approx(5e-4)  # p = 1/6: N p = 0.5, half way down the first cycle
    assert s.lr_at(40, 1e-3) == pytest.approx(1e-3)  # p = 1/3: hard restart to the peak
    assert s.lr_at(39, 1e-3) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * (29 / 30))))
    assert s.lr_at(100, 1e-3) == 0.0


def test_other_curves_hand_values():
    cos = lrs.LRSchedule("cosine", 110, 10)
    assert cos.lr_at(60, 2.0) == pytest.approx(1.0)  # half way: cos(pi/2)
    lin = lrs.LRSchedule("linear", 110, 10)
    assert lin.lr_at(35, 1.0) == pytest.approx(0.75)
    assert lin.lr_at(110, 1.0) == 0.0
    cww = lrs.LRSchedule("constant_with_warmup", 100, 4)
    assert [cww.lr_at(i, 1.0) for i in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert lrs.LRSchedule("constant", 100).lr_at(0, 3e-4) == 3e-4
    poly = lrs.LRSchedule("polynomial", 110, 10, power=2.0)
    assert poly.lr_at(60, 1.0) == pytest.approx((1 - 1e-7) * 0.25 + 1e-7)
    assert poly.lr_at(200, 1.0) == pytest.approx(1e-7)


def test_rex_hand_values():
    s = lrs.make_schedule("rex", total_steps=100, warmup_ratio=0.1, num_cycles=2)
    assert (s.warmup_steps, s.cycle_steps()) == (5, 50)
    base, floor = 1e-3, lrs.REX_MIN_LR
    assert s.lr_at(0, base) == pytest.approx(floor)
    assert s.lr_at(5, base) == pytest.approx(base)  # end of warmup: the peak
    # p = 1/3 of the decay: floor + span * (2/3) / (0.1 + 0.9 * 2/3)
    assert s.lr_at(20, base) == pytest.approx(floor + (base - floor) * (2 / 3) / 0.7)
    assert s.lr_at(50, base) == pytest.approx(floor)  # the second cycle warms up again
    assert s.lr_at(55, base) == pytest.approx(0.9 * base)  # ... to gamma x the first peak
    values = [s.lr_at(i, base) for i in range(5, 50)]
    assert all(a > b for a, b in itertools.pairwise(values))


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("constant_with_warmup", {}),
        ("linear", {}),
        ("cosine", {}),
        ("cosine_with_restarts", {"num_cycles": 3}),
        ("polynomial", {"power": 2.0}),
        ("constant", {}),
    ],
)
def test_curves_match_transformers(name, kwargs):
    transformers = pytest.importorskip("transformers")
    total, warmup, base = 200, 0 if name == "constant" else 17, 5e-4
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    if name == "cosine_with_restarts":
        sched = transformers.get_cosine_with_hard_restarts_schedule_with_warmup(opt, warmup, total, **kwargs)
    elif name == "polynomial":
        sched = transformers.get_polynomial_decay_schedule_with_warmup(opt, warmup, total, lr_end=1e-7, **kwargs)
    else:
        sched = transformers.get_scheduler(name, opt, num_warmup_steps=warmup or None, num_training_steps=total)
    ours = lrs.LRSchedule(name, total, warmup, kwargs.get("num_cycles", 1), kwargs.get("power", 1.0))
    theirs = []
    for _ in range(total + 5):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert [ours.lr_at(i, base) for i in range(total + 5)] == pytest.approx(theirs, abs=1e-12)


def test_unknown_scheduler_is_refused():
    with pytest.raises(ValueError, match="cosine_with_restarts"):
        lrs.LRSchedule("cosine_restarts", 10)


# ---- noise and targets ----------------------------------------------------------------------------


def test_schedule_matches_closed_form():
    assert ACP.numpy() == pytest.approx(numpy_acp(), rel=1e-6)
    assert float(ACP_ZT[-1]) == 0.0


def test_add_noise_and_velocity_on_known_numbers():
    x0 = torch.ones(2, 4, 2, 2)
    eps = torch.full((2, 4, 2, 2), 2.0)
    t = torch.tensor([0, 999])
    ab = numpy_acp()[[0, 999]]
    noisy = nz.add_noise(x0, eps, t, ACP)
    expect = np.sqrt(ab) * 1 + np.sqrt(1 - ab) * 2
    assert noisy[:, 0, 0, 0].numpy() == pytest.approx(expect, rel=1e-5)
    v = nz.velocity(x0, eps, t, ACP)
    assert v[:, 1, 1, 1].numpy() == pytest.approx(np.sqrt(ab) * 2 - np.sqrt(1 - ab) * 1, rel=1e-5)
    assert float(ab[0]) == pytest.approx(1 - 0.00085)


def test_min_snr_weights_at_known_timesteps():
    acp = numpy_acp()
    t = torch.tensor([0, 100, 500, 999])
    snr = acp[[0, 100, 500, 999]] / (1 - acp[[0, 100, 500, 999]])
    assert snr[0] == pytest.approx(0.99915 / 0.00085)
    eps = nz.min_snr_weights(t, ACP, 5.0, v_prediction=False).numpy()
    v = nz.min_snr_weights(t, ACP, 5.0, v_prediction=True).numpy()
    assert eps == pytest.approx(np.minimum(snr, 5) / snr, rel=1e-4)
    assert v == pytest.approx(np.minimum(snr, 5) / (snr + 1), rel=1e-4)
    assert eps[3] == 1.0  # SNR < gamma: weight 1
    assert eps[0] == pytest.approx(5 / 1175.4706, rel=1e-4)  # alpha_bar is float32, as kohya's


def test_zero_terminal_snr_weights_are_finite():
    t = torch.tensor([999, 998])
    eps = nz.min_snr_weights(t, ACP_ZT, 5.0)
    v = nz.min_snr_weights(t, ACP_ZT, 5.0, v_prediction=True)
    assert eps.tolist()[0] == 1.0 and v.tolist()[0] == 0.0
    assert torch.isfinite(nz.v_pred_like_noise_pred_weights(t, ACP_ZT)).all()
    assert nz.v_pred_like_noise_pred_weights(torch.tensor([0]), ACP).item() == pytest.approx(1000 / 1001)  # SNR capped


def test_noise_offset_is_one_constant_per_sample_and_channel():
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(3, 4, 8, 8, generator=g)
    out = nz.offset_noise(noise, 0.1, g)
    diff = out - noise
    assert diff.shape == (3, 4, 8, 8)
    assert torch.allclose(diff, diff[:, :, :1, :1].expand_as(diff))
    assert diff[:, :, 0, 0].abs().max() < 0.5 and diff[:, :, 0, 0].std() > 0.01


def test_pyramid_noise_statistics():
    g = torch.Generator().manual_seed(1234)
    noise = torch.randn(16, 4, 64, 64, generator=g)
    out = nz.pyramid_noise(noise, iterations=6, discount=0.3, generator=g)
    assert out.shape == noise.shape
    assert float(out.std()) == pytest.approx(1.0, abs=1e-5)
    assert abs(float(out.mean())) < 0.05
    # low frequencies were added: neighbouring pixels correlate, unlike white noise (a strong
    # discount makes it measurable: at 0.3 the coarse levels carry under 5% of the variance)
    strong = nz.pyramid_noise(noise, iterations=6, discount=0.8, generator=g)
    a, b = strong[..., :, :-1].flatten(), strong[..., :, 1:].flatten()
    corr = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    assert corr > 0.05
    white = float(torch.corrcoef(torch.stack([noise[..., :, :-1].flatten(), noise[..., :, 1:].flatten()]))[0, 1])
    assert abs(white) < 0.02
    again = nz.pyramid_noise(noise, 6, 0.3, torch.Generator().manual_seed(99))
    same = nz.pyramid_noise(noise, 6, 0.3, torch.Generator().manual_seed(99))
    assert torch.equal(again, same)


def test_noise_batch_targets_and_input_perturbation():
    x0 = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    opts = nz.NoiseOptions(v_prediction=True, ip_noise_gamma=0.1)
    nb = nz.noise_batch(x0, ACP, opts, torch.Generator().manual_seed(5))
    assert nb.timesteps.dtype == torch.int64 and nb.timesteps.shape == (4,)
    assert torch.allclose(nb.target, nz.velocity(x0, nb.noise, nb.timesteps, ACP))
    assert not torch.allclose(nb.noisy, nz.add_noise(x0, nb.noise, nb.timesteps, ACP))  # x_t perturbed, target not
    eps = nz.noise_batch(x0, ACP, nz.NoiseOptions(), torch.Generator().manual_seed(5))
    assert torch.equal(eps.target, eps.noise)
    assert torch.allclose(eps.noisy, nz.add_noise(x0, eps.noise, eps.timesteps, ACP))
    replay = nz.noise_batch(x0, ACP, nz.NoiseOptions(), torch.Generator().manual_seed(5))
    assert torch.equal(replay.noisy, eps.noisy)
    bounded = nz.noise_batch(x0, ACP, nz.NoiseOptions(min_timestep=10, max_timestep=12), torch.Generator().manual_seed(1))
    assert set(bounded.timesteps.tolist()) <= {10, 11}


def test_loss_is_per_sample_mse_then_weights_then_mean():
    pred = torch.zeros(2, 1, 2, 2)
    target = torch.stack([torch.ones(1, 2, 2), torch.full((1, 2, 2), 2.0)])
    assert nz.per_sample_mse(pred, target).tolist() == [1.0, 4.0]
    assert nz.training_loss(pred, target, torch.tensor([1.0, 0.5])).item() == pytest.approx(1.5)
    w = nz.loss_weights(torch.tensor([0, 999]), ACP, min_snr_gamma=5.0, sample_weights=torch.tensor([1.0, 0.5]))
    assert w.tolist() == pytest.approx([5 / 1175.4706, 0.5], rel=1e-4)
    assert nz.loss_weights(torch.tensor([3]), ACP).tolist() == [1.0]


# ---- steps ------------------------------------------------------------------------------------


def test_regularization_balancing_as_kohya():
    assert balance_regularization(20, [1, 1, 1]) == [7, 7, 6]
    assert balance_regularization(10, [4, 4, 4, 4]) == [4, 4, 4, 0]  # extra reg images unused
    assert balance_regularization(10, []) == []
    assert sum(balance_regularization(200, [10] * 5)) == 200


def test_guide_example_single_bucket():
    plan = plan_steps([FolderCount("dataset", 20, 10)], {(512, 512): 200}, batch_size=2, max_train_epochs=10)
    assert (plan.samples_per_epoch, plan.steps_per_epoch, plan.total_steps) == (200, 100, 1000)
    assert "20 images x 10 repeats = 200 steps" in plan.preview()
    assert "10 epochs = 1000 total steps" in plan.preview()


def test_bucket_remainders_add_steps():
    counts = {(512, 512): 5, (448, 576): 3}
    assert batches_per_epoch(counts, 2) == 5  # ceil(5/2) + ceil(3/2), not 8/2
    plan = plan_steps([FolderCount("a", 4, 2)], counts, batch_size=2, max_train_epochs=10)
    assert (plan.steps_per_epoch, plan.total_steps) == (5, 50)
    assert "1 more than 8/2" in plan.preview()
    acc = plan_steps([FolderCount("a", 4, 2)], counts, batch_size=2, gradient_accumulation_steps=2)
    assert acc.steps_per_epoch == 3


def test_steps_unit_derives_epochs():
    counts = {(512, 512): 10}
    plan = plan_steps([FolderCount("a", 10, 1)], counts, 2, unit="steps", max_train_steps=45)
    assert (plan.steps_per_epoch, plan.epochs, plan.total_steps) == (5, 9, 45)
    partial = plan_steps([FolderCount("a", 10, 1)], counts, 2, unit="steps", max_train_steps=47)
    assert partial.epochs == 10 and "last one partial" in partial.preview()
    assert partial.epoch_of_step(0) == 1 and partial.epoch_of_step(45) == 10


def test_plan_flags_too_many_steps_and_regularization():
    reg = FolderCount("reg", 30, 1, True, used=200)
    plan = plan_steps([FolderCount("a", 20, 10), reg], {(512, 512): 400}, 1, max_train_epochs=30)
    assert plan.total_steps == 12000 and plan.too_long
    text = plan.preview()
    assert "balanced to 200 samples" in text and "over 10000" in text

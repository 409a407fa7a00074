"""Networks, policy families, samplers, normalization and checkpoint folders (real diffusers schedulers)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from robot_policy.nn.encoders import ObsEncoder, ResNet18GN, crop_images
from robot_policy.nn.transformer import TransformerDenoiser
from robot_policy.nn.unet1d import ConditionalUnet1D
from robot_policy.policies import POLICIES, CheckpointError, PolicyConfig, load, save_policy
from robot_policy.policies.normalize import Normalizer

A, D = 3, 4


def tiny_stats():
    return {
        "state": {
            "min": np.array([-2, 0, 5, 1.0]),
            "max": np.array([2, 1, 5, 3.0]),
            "mean": np.zeros(4),
            "std": np.ones(4),
        },
        "action": {"min": -np.ones(A), "max": np.array([1, 2, 3.0]), "mean": np.zeros(A), "std": np.ones(A)},
    }


def tiny_config(family: str, **kw) -> PolicyConfig:
    base = dict(
        family=family,
        obs_keys=["state"],
        obs_shapes={"state": [D]},
        action_dim=A,
        horizon=8,
        n_obs_steps=2,
        n_action_steps=4,
        down_dims=[16, 32],
        step_embed_dim=16,
        obs_mlp_dims=[32],
        d_model=32,
        n_heads=2,
        n_layers=1,
    )
    base.update(kw)
    return PolicyConfig(**base)


def make_policy(family: str, **kw):
    torch.manual_seed(0)
    policy = POLICIES.get(family)(tiny_config(family, **kw), tiny_stats())
    if family == "consistency":
        policy.attach_teacher(POLICIES.get("flow")(tiny_config("flow", **kw), tiny_stats()))
    return policy.eval()


def test_unet_and_transformer_shapes():
    x, t, c = torch.randn(2, 16, 5), torch.tensor([3, 70]), torch.randn(2, 11)
    unet = ConditionalUnet1D(5, 11, (16, 32, 64), kernel_size=3, step_embed_dim=16)
    assert unet(x, t, c).shape == (2, 16, 5)
    tr = TransformerDenoiser(5, 11, horizon=16, d_model=32, n_heads=2, n_layers=1)
    assert tr(x, t.float(), c).shape == (2, 16, 5)


def test_image_encoder_crop_and_features():
    imgs = torch.rand(6, 3, 20, 20)
    train_crop = crop_images(imgs, (16, 16), random=True)
    assert train_crop.shape == (6, 3, 16, 16)
    centre = crop_images(imgs, (16, 16), random=False)
    assert torch.equal(centre, imgs[:, :, 2:18, 2:18])
    # every random crop is a real window of its own image
    for i in range(6):
        windows = imgs[i].unfold(1, 16, 1).unfold(2, 16, 1)  # (3, 5, 5, 16, 16)
        assert any(torch.equal(windows[:, a, b], train_crop[i]) for a in range(5) for b in range(5))
    net = ResNet18GN(out_dim=8, width=8)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 8)
    enc = ObsEncoder({"s": 4}, ["cam_rgb"], 2, (32,), image_feature_dim=8, image_width=8, crop_shape=(16, 16))
    out = enc({"s": torch.rand(2, 2, 4), "cam_rgb": torch.rand(2, 2, 3, 20, 20)})
    assert out.shape == (2, 32)


def test_normalization_round_trip_and_range():
    stats = tiny_stats()
    norm = Normalizer(stats, ["state", "action"])
    x = torch.tensor(
        np.random.default_rng(0).uniform(stats["state"]["min"], stats["state"]["max"], (50, D)),
        dtype=torch.float32,
    )
    n = norm.normalize("state", x)
    assert n.abs().max() <= 1 + 1e-5
    assert torch.allclose(
        norm.normalize("state", torch.tensor([[-2.0, 0, 5, 1]])), torch.tensor([[-1.0, -1, 0, -1]])
    )
    assert torch.allclose(norm.unnormalize("state", n), x, atol=1e-5)  # constant dim 2 survives too


SAMPLER_CASES = [
    ("diffusion", "ddpm", [1, 2, 5, 10, 100]),
    ("diffusion", "ddim", [1, 2, 5, 10, 16]),
    ("diffusion", "dpmsolver++", [1, 2, 3, 5, 10, 16]),
    ("flow", "euler", list(range(1, 11))),
    ("flow", "midpoint", [1, 2, 4, 10]),
    ("flow", "heun", [1, 2, 4, 10]),
    ("consistency", None, [1, 2, 3]),
]


@pytest.mark.parametrize("family,sampler,steps", SAMPLER_CASES)
def test_samplers_shapes_dtypes_finite(family, sampler, steps):
    policy = make_policy(family)
    obs = {"state": np.random.default_rng(1).normal(size=(4, 2, D)).astype(np.float32)}
    cond = policy.encode(policy.normalize_obs(obs))
    for n in steps:
        with torch.no_grad():
            x = policy.sample(cond, n, sampler=sampler)
        assert x.shape == (4, 8, A) and x.dtype == torch.float32, (sampler, n)
        assert torch.isfinite(x).all(), (sampler, n)
        # warm start: only the last steps run from a noised previous plan
        if n > 1:
            with torch.no_grad():
                w = policy.sample(cond, n, init=x.roll(-1, dims=1), start_step=n - 1)
            assert w.shape == x.shape and torch.isfinite(w).all()
    chunk = policy.predict({"state": obs["state"][0]}, num_steps=steps[0], sampler=sampler)
    assert chunk.actions.shape == (8 - 2 + 1, A) and chunk.actions.dtype == np.float32
    assert chunk.dt == pytest.approx(1 / 20.0)


def test_sample_rejects_bad_arguments():
    policy = make_policy("flow")
    cond = torch.zeros(1, 32)
    with pytest.raises(ValueError, match="start_step"):
        policy.sample(cond, 2, init=torch.zeros(1, 8, A), start_step=2)
    with pytest.raises(ValueError, match="noise has shape"):
        policy.sample(cond, 2, noise=torch.zeros(1, 4, A))
    with pytest.raises(KeyError, match="unknown flow integrator"):
        policy.sample(cond, 2, sampler="rk45")
    with pytest.raises(ValueError, match="num_steps"):
        make_policy("diffusion").sample(cond, 101)


def test_transformer_backbone_trains_a_step():
    policy = make_policy("flow", backbone="transformer").train()
    batch = {"obs": {"state": torch.rand(4, 2, D)}, "action": torch.rand(4, 8, A)}
    loss = policy.compute_loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and policy.model.out.weight.grad is not None


@pytest.mark.parametrize("family", ["diffusion", "flow", "consistency"])
def test_checkpoint_round_trip_reproduces_actions(tmp_path, family):
    policy = make_policy(family)
    save_policy(policy, tmp_path / "ck", meta={"step": 7})
    loaded = load(tmp_path / "ck")
    assert type(loaded) is type(policy) and loaded.config == policy.config
    obs = {"state": np.random.default_rng(2).normal(size=(2, D)).astype(np.float32)}
    torch.manual_seed(5)
    a = policy.predict(obs, num_steps=3).actions
    torch.manual_seed(5)
    b = loaded.predict(obs, num_steps=3).actions
    assert np.array_equal(a, b)
    meta = json.loads((tmp_path / "ck" / "meta.json").read_text())
    assert meta["step"] == 7 and "git_commit" in meta


def test_git_commit_marks_uncommitted_changes_dirty(tmp_path):
    import subprocess

    from robot_policy.policies.checkpoint import git_commit

    assert git_commit(tmp_path) == "unknown"  # not a git tree

    def git(*args):
        ident = ["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
        return subprocess.run(
            ["git", *ident, *args], cwd=tmp_path, check=True, capture_output=True, text=True
        )

    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("commit", "-q", "-m", "init")
    sha = git("rev-parse", "HEAD").stdout.strip()
    assert git_commit(tmp_path) == sha
    (tmp_path / "new.py").write_text("untracked\n")
    assert git_commit(tmp_path) == sha  # untracked files do not make the tree dirty
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == sha + "+dirty"


def test_bad_checkpoints_are_rejected_clearly(tmp_path):
    policy = make_policy("flow")
    good = save_policy(policy, tmp_path / "good")

    def variant(name):
        d = tmp_path / name
        d.mkdir()
        for f in good.iterdir():
            (d / f.name).write_bytes(f.read_bytes())
        return d

    with pytest.raises(CheckpointError, match="does not exist"):
        load(tmp_path / "nope")
    partial = variant("partial")
    (partial / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"missing \['model.safetensors'\]"):
        load(partial)
    old = variant("old")
    cfg = json.loads((old / "config.json").read_text())
    cfg["format_version"] = 0
    (old / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="format_version 0"):
        load(old)
    unknown = variant("unknown_field")
    cfg = json.loads((unknown / "config.json").read_text())
    cfg["policy"]["noise_level"] = 3
    (unknown / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="noise_level"):
        load(unknown)
    mixed = variant("mixed")
    cfg = json.loads((mixed / "config.json").read_text())
    cfg["policy"]["down_dims"] = [16, 64]
    (mixed / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="does not match config.json"):
        load(mixed)
    trunc = variant("truncated")
    data = (trunc / "model.safetensors").read_bytes()
    (trunc / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load(trunc)
    assert isinstance(load(Path(good)), POLICIES.get("flow"))


@pytest.mark.parametrize("teacher_family", ["diffusion", "flow"])
def test_teacher_predictions_are_consistent_in_flow_coordinates(teacher_family):
    """x0/eps estimates of either teacher recombine to the input point: (1 - t) x0 + t eps = x."""
    teacher = make_policy(teacher_family)
    grid = teacher.ode_grid(10)
    assert grid[0] == 0 and torch.all(grid[1:] > grid[:-1]) and grid[-1] <= 1
    x, t = torch.randn(5, 8, A) * 0.5, grid[torch.tensor([1, 3, 5, 8, 10])]
    cond = torch.randn(5, 32)
    with torch.no_grad():
        x0, eps = teacher.predict_x0_eps(x, t, cond)
    assert torch.allclose((1 - t[:, None, None]) * x0 + t[:, None, None] * eps, x, atol=1e-4)
    student = POLICIES.get("consistency")(tiny_config("consistency"), tiny_stats())
    student.attach_teacher(teacher)
    assert torch.equal(student.grid, teacher.ode_grid(20).float())
    batch = {"obs": {"state": torch.rand(4, 2, D)}, "action": torch.rand(4, 8, A)}
    loss = student.compute_loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is None for p in teacher.parameters())
    # the boundary condition f(x, 0) = x holds by construction
    assert torch.equal(student.consistency_fn(x, torch.zeros(1), cond), x)

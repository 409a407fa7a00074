"""The one training loop for every policy family.

AdamW with linear warmup + cosine decay, EMA weights (saved as the checkpoint's weights), global
gradient-norm clipping, bf16 autocast on CUDA, periodic checkpoints and exact resume, tqdm bar,
CSV log + PNG curve, optional periodic simulation eval, and DistributedDataParallel when started
by ``torchrun`` (gloo on CPU, NCCL on GPU).

Exact resume: every step reseeds torch/numpy from ``(seed, step, rank)`` and draws its batch from
that seed, so step k does the same thing whether or not the run was interrupted before it.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from robot_policy.config import to_dict
from robot_policy.data.sampler import SequenceDataset
from robot_policy.policies import POLICIES, Policy, load, save_policy
from robot_policy.policies.config import PolicyConfig
from robot_policy.train.config import RunConfig
from robot_policy.train.data import dataset_fingerprint, training_windows
from robot_policy.train.state import EMA, ScalarLog, load_train_state, plot_curve, save_train_state


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def lr_at(step: int, cfg) -> float:
    """Linear warmup over ``warmup_steps``, cosine decay to ``min_lr_ratio * lr`` at ``steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cos = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cos)


def complete_policy_config(pcfg: PolicyConfig, store) -> PolicyConfig:
    """Fill data-dependent fields (keys, shapes, action_dim, fps) from the store's schema."""
    schema = store.schema
    if pcfg.action_key not in schema:
        raise KeyError(f"dataset has no action key '{pcfg.action_key}'; keys: {sorted(schema)}")
    obs_keys = list(pcfg.obs_keys)
    if not obs_keys and not pcfg.image_keys:
        obs_keys = sorted(k for k, s in schema.items() if k != pcfg.action_key and len(s.shape) <= 1)
    for k in [*obs_keys, *pcfg.image_keys]:
        if k not in schema:
            raise KeyError(f"policy observation key '{k}' is not in the dataset; keys: {sorted(schema)}")
    shapes = {k: list(schema[k].shape) or [1] for k in [*obs_keys, *pcfg.image_keys]}
    adim = int(np.prod(schema[pcfg.action_key].shape))
    return replace(pcfg, obs_keys=obs_keys, obs_shapes=shapes, action_dim=adim, fps=float(store.fps))


def build_policy(run: RunConfig, store, teacher_dir: str | None, device) -> tuple[Policy, Policy | None]:
    """The policy to train (and, for consistency distillation, its frozen teacher)."""
    pcfg = run.policy
    if pcfg.family == "consistency":
        if not teacher_dir:
            raise ValueError(
                "--policy consistency distils a trained teacher: pass --teacher DIR (diffusion or flow)"
            )
        teacher = load(teacher_dir, device=device)
        tcfg = teacher.config
        # The student copies the teacher's observation pipeline and architecture so both see the
        # same normalized inputs, and starts from the teacher's weights.
        cons = replace(pcfg.consistency, teacher_family=tcfg.family)
        scfg = replace(tcfg, family="consistency", consistency=cons)
        student = POLICIES.get("consistency")(scfg, teacher.stats).to(device)
        student.load_state_dict(teacher.state_dict(), strict=False)
        student.attach_teacher(teacher)
        return student, teacher
    if teacher_dir:
        raise ValueError(f"--teacher only applies to --policy consistency (got --policy {pcfg.family})")
    pcfg = complete_policy_config(pcfg, store)
    all_stats = store.stats()
    stats = {k: all_stats[k] for k in [*pcfg.obs_keys, pcfg.action_key]}
    return POLICIES.get(pcfg.family)(pcfg, stats).to(device), None


def _to_device(batch: dict, device) -> dict:
    obs = {
        k: torch.from_numpy(np.ascontiguousarray(v)).to(device, non_blocking=True)
        for k, v in batch["obs"].items()
    }
    return {"obs": obs, "action": torch.from_numpy(batch["action"]).to(device, non_blocking=True)}


@torch.no_grad()
def _val_loss(
    model: Policy, sampler: SequenceDataset, batch_size: int, seed: int, device, n_batches: int = 4
) -> float:
    was = model.training
    model.eval()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    losses = [
        model.compute_loss(
            _to_device(sampler.batch(rng.integers(0, len(sampler), batch_size)), device)
        ).item()
        for _ in range(n_batches)
    ]
    model.train(was)
    return float(np.mean(losses))


def train(
    run: RunConfig,
    data: str | Path,
    out: str | Path,
    device: str = "cpu",
    teacher_dir: str | None = None,
    resume: bool = False,
    progress: bool = True,
    stop_at: int | None = None,
) -> dict:
    """Train and write the checkpoint folder ``out``; returns a summary dict.

    ``stop_at`` ends this process early (with a checkpoint) at that step, as a preempted job
    would; the schedule still spans ``train.steps`` and ``resume=True`` continues it.
    """
    from robot_policy.data import EpisodeStore, train_val_split

    rank, world, local_rank = _dist_info()
    distributed = world > 1
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but CUDA is not available; use --device cpu")
    dev = torch.device(f"cuda:{local_rank}" if device == "cuda" else "cpu")
    if distributed:
        import torch.distributed as dist

        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    out = Path(out)
    tc = run.train
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    if not resume and (out / "train_state" / "state.json").exists():
        raise FileExistsError(
            f"{out} already holds a training run; pass --resume to continue it or pick another --out"
        )

    store = EpisodeStore.open(str(data), mode="r")
    torch.manual_seed(tc.seed)
    policy, teacher = build_policy(run, store, teacher_dir, dev)
    cfg = policy.config
    if tc.val_ratio > 0:
        train_eps, val_eps = train_val_split(store.num_episodes, tc.val_ratio, tc.seed)
    else:
        train_eps, val_eps = list(range(store.num_episodes)), []
    keys = [*cfg.obs_keys, *cfg.image_keys]
    sampler = training_windows(
        store, keys, cfg.action_key, cfg.n_obs_steps, cfg.horizon, cfg.n_action_steps, train_eps
    )
    val_sampler = (
        training_windows(
            store, keys, cfg.action_key, cfg.n_obs_steps, cfg.horizon, cfg.n_action_steps, val_eps
        )
        if len(val_eps)
        else None
    )
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)
    ema = EMA(policy, tc.ema_power, tc.ema_max_decay)
    start = 0
    if resume:
        start = int(load_train_state(out, policy, ema, opt, dev)["step"])
    model = policy
    if distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(policy, device_ids=[dev.index] if dev.type == "cuda" else None)

    meta_base = {
        "dataset_path": str(Path(data).resolve()),
        "dataset_fingerprint": dataset_fingerprint(store),
        "dataset_episodes": int(store.num_episodes),
        "dataset_frames": int(store.num_frames),
        "family": cfg.family,
        "num_parameters": policy.num_parameters(),
        "teacher": str(Path(teacher_dir).resolve()) if teacher_dir else None,
        "train_config": to_dict(tc),
        "world_size": world,
        "device": str(dev),
    }
    log = ScalarLog(out / "train_log.csv", resume_from_step=start if resume else None) if rank == 0 else None
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda" and tc.bf16)
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=tc.steps, initial=start, desc=f"train {cfg.family}", unit="step", dynamic_ncols=True)
    t_start, wall_prev = time.perf_counter(), 0.0
    if resume and (out / "meta.json").is_file():
        from robot_policy.policies import read_meta

        wall_prev = float(read_meta(out).get("wall_time_s", 0.0))
    window_loss, window_t, window_n = [], time.perf_counter(), 0
    last_eval, last_loss = None, None

    def checkpoint(step: int) -> None:
        wall = wall_prev + time.perf_counter() - t_start
        done = step - start
        meta = {
            **meta_base,
            "step": step,
            "wall_time_s": round(wall, 1),
            "samples_per_s": round(
                done * tc.batch_size * world / max(1e-9, time.perf_counter() - t_start), 1
            ),
            "last_eval": last_eval,
        }
        save_policy(policy, out, meta, state_dict=ema.module.state_dict())
        save_train_state(out, policy, ema, opt, step, {"wall_time_s": wall})
        plot_curve(
            log.read(), out / "train_curve.png", f"{cfg.family} ({policy.num_parameters() / 1e6:.1f}M params)"
        )

    policy.train()
    step = start
    end = min(tc.steps, stop_at) if stop_at else tc.steps
    for step in range(start, end):
        seed = (tc.seed * 1_000_003 + step) * max(1, world) + rank
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        batch = _to_device(sampler.batch(rng.integers(0, len(sampler), tc.batch_size)), dev)
        lr = lr_at(step, tc)
        for g in opt.param_groups:
            g["lr"] = lr
        with autocast:
            loss = model(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss is {loss.item()} at step {step}; lower train.lr or check the data"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(params, tc.grad_clip if tc.grad_clip > 0 else float("inf"))
        opt.step()
        policy.on_train_step(step)
        ema.update(policy, step)
        last_loss = loss.item()
        window_loss.append(last_loss)
        window_n += tc.batch_size * world
        done = step + 1
        if rank == 0 and (done % tc.log_every == 0 or done == tc.steps):
            now = time.perf_counter()
            row = {
                "step": done,
                "loss": float(np.mean(window_loss)),
                "lr": lr,
                "grad_norm": float(gnorm),
                "samples_per_s": window_n / max(1e-9, now - window_t),
                "elapsed_s": round(wall_prev + now - t_start, 2),
                "val_loss": "",
                "eval_success": "",
            }
            if val_sampler is not None and (done % tc.checkpoint_every == 0 or done == tc.steps):
                row["val_loss"] = _val_loss(ema.module, val_sampler, tc.batch_size, tc.seed, dev)
            if tc.eval_every and (done % tc.eval_every == 0 or done == tc.steps):
                last_eval = _periodic_eval(ema.module, tc)
                row["eval_success"] = last_eval["success_rate"]
            log.write(row)
            if bar is not None:
                bar.set_postfix(loss=f"{row['loss']:.4f}", samples_s=f"{row['samples_per_s']:.0f}")
            window_loss, window_t, window_n = [], now, 0
        if bar is not None:
            bar.update(1)
        if rank == 0 and (done % tc.checkpoint_every == 0 or done == end):
            checkpoint(done)
    if bar is not None:
        bar.close()
    if rank == 0 and start >= tc.steps:
        checkpoint(tc.steps)  # --resume of a finished run: nothing to do, keep the folder consistent
    if distributed:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    del teacher
    elapsed = time.perf_counter() - t_start
    return {
        "out": str(out),
        "family": cfg.family,
        "steps": tc.steps,
        "start_step": start,
        "num_parameters": policy.num_parameters(),
        "wall_time_s": wall_prev + elapsed,
        "samples_per_s": (end - start) * tc.batch_size * world / max(1e-9, elapsed),
        "final_loss": last_loss,
        "last_eval": last_eval,
    }


def _periodic_eval(model: Policy, tc) -> dict:
    from robot_policy.evaluation.rollout import evaluate

    policy = copy.deepcopy(model).eval()
    res = evaluate(policy, tc.eval_task, tc.eval_episodes, progress=False)
    return {"success_rate": res["success_rate"], "episodes": res["episodes"]}

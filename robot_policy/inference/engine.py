"""The inference engine: any policy family, one call per control decision, as fast as possible.

The policy is a fixed pipeline (``normalize_obs -> encode -> sample -> unnormalize_action``,
see ``robot_policy.policies.base``). The engine runs it:

* on CUDA: from preallocated static input/output buffers, the *whole* pipeline (encoder,
  every denoising/integration step, unnormalization) recorded as one CUDA graph per
  (batch, steps, start_step, warm/cold) configuration and replayed; Python and kernel-launch
  overhead disappear, which dominates few-step samplers at batch 1. Weights in bf16 under
  autocast (norms/softmax stay fp32, the sampler state stays fp32), accepted only if the
  action error against fp32 on a validation input is below ``bf16_tolerance``;
  channels-last convolutional encoders; optional ``torch.compile`` of the networks;
* on CPU: eager under ``torch.inference_mode`` with a fixed thread count.

Both warm up at construction, so the first real call is not slow, and both support warm
start (RTI-DP, ``robot_policy.inference.warmstart``) and the soft-masked prefix of real-time
chunking when the scheduler hands a ``Prior``.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping

import numpy as np
import torch

from robot_policy.inference.scheduler import Prior
from robot_policy.inference.serving import EngineConfig
from robot_policy.inference.warmstart import build_init, warm_steps
from robot_policy.types import ActionChunk

__all__ = ["EngineConfig", "InferenceEngine", "cpu_has_native_bf16", "resolve_device"]
log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    """``EngineConfig.device`` -> a torch device string ('auto': CUDA when available)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"EngineConfig.device={device!r} but CUDA is not available here; use device 'cpu' or 'auto'"
        )
    return device


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (then bf16 weights halve the memory traffic of a
    memory-bound batch-1 forward: ~1.6x faster on the 66M UNet here); Linux only, else False."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class _Graph:
    """Static buffers and one recorded CUDA graph for one configuration."""

    def __init__(self, obs: dict, noise, init, weights):
        self.obs, self.noise, self.init, self.weights = obs, noise, init, weights
        self.graph = None
        self.out = None
        self.host_out = None


class InferenceEngine:
    """Serve ``policy``: ``engine.predict(obs_history, prior=None) -> ActionChunk``.

    A ``robot_policy.policies.Predictor`` like the policy it wraps (``predict``, ``reset``,
    ``config``), so the episode loop and the policy runner take either.
    """

    def __init__(self, policy, cfg: EngineConfig | None = None, validation_obs: Mapping | None = None):
        cfg = cfg or EngineConfig()  # validated when it was built
        self.cfg = cfg
        self.device = torch.device(resolve_device(cfg.device))
        self.cuda = self.device.type == "cuda"
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self.policy = policy.to(self.device).eval()
        self.pc = policy.config
        self.num_steps = int(cfg.num_steps or policy.default_steps())
        self.sampler = cfg.sampler or None
        self.horizon, self.action_dim = self.pc.horizon, self.pc.action_dim
        self.keys = [*self.pc.obs_keys, *self.pc.image_keys]
        self._gen = torch.Generator(device=self.device)
        if cfg.seed is not None:
            self._gen.manual_seed(int(cfg.seed))
        else:
            self._gen.seed()
        self._graphs: dict[tuple, _Graph] = {}
        self._eager_keys: set[tuple] = set()
        self.last_stages: dict[str, float] = {}
        """Milliseconds of the last call's parts on the CPU: ``encode`` (normalize + observation
        encoder: the image network for an image policy) and ``denoise`` (the sampler)."""
        self._pool = None
        self.report: dict = {
            "device": str(self.device),
            "family": self.pc.family,
            "num_steps": self.num_steps,
        }
        if self.cuda:
            self.report["gpu"] = torch.cuda.get_device_name(self.device)
        self._prepare_modules()
        self.bf16 = False
        if cfg.precision == "bf16" or (cfg.precision == "auto" and (self.cuda or cpu_has_native_bf16())):
            self._try_bf16(validation_obs)
        self.report["precision"] = "bf16" if self.bf16 else "fp32"
        t0 = time.perf_counter()
        self.warmup()
        self.report["warmup_s"] = time.perf_counter() - t0

    # ------------------------------------------------------------------ setup
    @classmethod
    def load(cls, path, cfg: EngineConfig | None = None) -> InferenceEngine:
        """Load a checkpoint folder (``runs/NAME``) and wrap it."""
        from robot_policy.policies import load

        return cls(load(path, device="cpu"), cfg)

    def _prepare_modules(self) -> None:
        p = self.policy
        has_conv2d = any(isinstance(m, torch.nn.Conv2d) for m in p.obs_encoder.modules())
        if self.cfg.channels_last and has_conv2d:
            # cuDNN/oneDNN convolutions are fastest in NHWC; image_to_float already yields NHWC strides.
            p.obs_encoder.to(memory_format=torch.channels_last)
            self.report["channels_last"] = True
        if self.cfg.compile:
            # Our own CUDA graphs wrap the compiled code, so inductor must not add its own.
            mode = "max-autotune-no-cudagraphs" if self.cuda else None
            p.model.compile(mode=mode, dynamic=False)
            p.obs_encoder.compile(mode=mode, dynamic=False)
            self.report["compiled"] = True
        s = p.normalizer
        key = self.pc.action_key
        self._act_scale = getattr(s, f"{key}__scale").detach().cpu().numpy().astype(np.float32)
        self._act_offset = getattr(s, f"{key}__offset").detach().cpu().numpy().astype(np.float32)

    def _networks(self) -> list[torch.nn.Module]:
        return [self.policy.obs_encoder, self.policy.model]

    def _try_bf16(self, validation_obs) -> None:
        """Cast the networks to bf16, compare with fp32 on one input, keep bf16 only if close.

        On CPU with ``precision='auto'`` bf16 must also be faster than fp32 on a probe
        (encoder + one denoiser forward): small models lose to the casts, big memory-bound
        ones win, and the engine must never be slower than eager.
        """
        obs = validation_obs or self.dummy_obs(seed=1)
        backup = [copy.deepcopy(m.state_dict()) for m in self._networks()]
        ref = self._eager(self._batch(obs), self._fixed_noise(1), None, None, self.num_steps, 0, seed=7)
        probe_cpu = not self.cuda and self.cfg.precision == "auto"
        fp32_ms = self._probe_ms(obs) if probe_cpu else 0.0
        for m in self._networks():
            m.to(torch.bfloat16)
        self.bf16 = True
        out = self._eager(self._batch(obs), self._fixed_noise(1), None, None, self.num_steps, 0, seed=7)
        nerr = float(np.max(np.abs((out - ref) * self._act_scale)))
        self.report["bf16_max_action_error"] = float(np.max(np.abs(out - ref)))
        self.report["bf16_max_normalized_error"] = nerr
        reject = None
        if not np.isfinite(nerr) or nerr > self.cfg.bf16_tolerance:
            reject = f"bf16 action error {nerr:.4f} (normalized) > bf16_tolerance {self.cfg.bf16_tolerance}"
        elif probe_cpu:
            bf16_ms = self._probe_ms(obs)
            self.report["cpu_probe_ms"] = {"fp32": fp32_ms, "bf16": bf16_ms}
            if bf16_ms >= fp32_ms:
                reject = f"bf16 probe {bf16_ms:.1f} ms is not faster than fp32 {fp32_ms:.1f} ms on this CPU"
        if reject:
            log.info("%s: serving in fp32", reject)
            self.report["bf16_rejected"] = reject
            for m, sd in zip(self._networks(), backup):
                m.to(torch.float32)
                m.load_state_dict(sd)
            self.bf16 = False

    def _probe_ms(self, obs, reps: int = 3) -> float:
        """Best-of-``reps`` time (ms) of encoder + one denoiser forward in the current precision."""
        p = self.policy
        batch = {k: torch.from_numpy(v).to(self.device) for k, v in self._batch(obs).items()}
        x = torch.zeros((1, self.horizon, self.action_dim), device=self.device)
        t = torch.ones(1, device=self.device)
        best = float("inf")
        with torch.inference_mode(), self._autocast():
            for _ in range(reps + 1):  # the first call pays one-time costs
                t0 = time.perf_counter()
                p.model(x, t, p.encode(p.normalize_obs(batch)).float())
                best = min(best, time.perf_counter() - t0)
        return best * 1000.0

    def dummy_obs(self, seed: int = 0) -> dict[str, np.ndarray]:
        """A plausible observation history (normalized range) for warm-up and validation."""
        rng = np.random.default_rng(seed)
        obs = {}
        for k in self.pc.obs_keys:
            shape = (self.pc.n_obs_steps, *self.pc.obs_shapes[k])
            lo = self.policy.stats[k]["min"].reshape(-1)
            hi = self.policy.stats[k]["max"].reshape(-1)
            u = rng.uniform(size=(self.pc.n_obs_steps, lo.size))
            obs[k] = (lo + u * (hi - lo)).reshape(shape).astype(np.float32)
        for k in self.pc.image_keys:
            shape = (self.pc.n_obs_steps, *self.pc.obs_shapes[k])
            obs[k] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        return obs

    def warmup(self) -> None:
        """Run (and on CUDA capture) the configurations served by default, so call 1 is fast."""
        obs = self.dummy_obs()
        for _ in range(max(1, self.cfg.warmup)):
            self.predict(obs)
        if self.cfg.warm_start.enabled:
            prior = self.predict(obs).actions
            for _ in range(max(1, self.cfg.warmup)):
                self.predict(obs, prior=prior)

    # --------------------------------------------------------------- pipeline
    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _pipeline(self, obs, noise, init, weights, steps: int, start_step: int) -> torch.Tensor:
        """normalize -> encode -> sample -> (RTC blend) -> unnormalize. Traced by CUDA graphs."""
        p = self.policy
        # On the CPU every op is synchronous, so wall time splits the call into its parts (the
        # policy node reports them on /diagnostics); a CUDA graph or stream would need a sync.
        timed = self.device.type == "cpu"
        t0 = time.perf_counter()
        nobs = p.normalize_obs(obs)
        with self._autocast():
            cond = p.encode(nobs)
        # The sampler state stays fp32 whatever the networks run in (initial_noise uses cond's dtype).
        cond = cond.float()
        t1 = time.perf_counter()
        with self._autocast():
            # init only seeds the sampler in warm start (start_step > 0); a cold start with an RTC
            # prior samples from pure noise and only blends toward the plan below.
            warm = init if start_step > 0 else None
            nact = p.sample(cond, steps, init=warm, start_step=start_step, noise=noise, sampler=self.sampler)
        nact = nact.float()
        if weights is not None:
            # Real-time chunking: actions that run before this chunk lands are pinned to the plan
            # (weight 1); the overlap after them is pulled toward it with decaying weight.
            nact = weights * init + (1.0 - weights) * nact
        out = p.unnormalize_action(nact)
        if timed:
            self.last_stages = {"encode": (t1 - t0) * 1e3, "denoise": (time.perf_counter() - t1) * 1e3}
        return out

    def _batch(self, obs: Mapping) -> dict[str, np.ndarray]:
        return self.policy.batch_of_one(obs)

    def _fixed_noise(self, batch: int, seed: int = 0) -> np.ndarray:
        g = np.random.default_rng(seed)
        return g.standard_normal((batch, self.horizon, self.action_dim)).astype(np.float32)

    def _eager(self, obs, noise, init, weights, steps, start_step, seed: int | None = None) -> np.ndarray:
        dev = self.device
        with torch.inference_mode():
            t_obs = {k: torch.from_numpy(np.ascontiguousarray(v)).to(dev) for k, v in obs.items()}
            b = next(iter(t_obs.values())).shape[0]
            if noise is None:
                t_noise = torch.randn((b, self.horizon, self.action_dim), generator=self._gen, device=dev)
            else:
                t_noise = torch.as_tensor(noise, device=dev, dtype=torch.float32)
            t_init = None if init is None else torch.as_tensor(init, device=dev)
            t_w = None if weights is None else torch.as_tensor(weights, device=dev)
            if seed is not None:
                # Samplers that draw noise per step (DDPM) use the global RNG; fix it for comparisons.
                torch.manual_seed(seed)
            out = self._pipeline(t_obs, t_noise, t_init, t_w, steps, start_step)
            return out.float().cpu().numpy()

    def _graph(self, key: tuple, obs: dict) -> _Graph:
        g = self._graphs.get(key)
        if g is not None:
            return g
        b, steps, start_step, has_init, has_w = key
        dev = self.device
        with torch.inference_mode():
            st = _Graph(
                {
                    k: torch.empty(v.shape, dtype=torch.from_numpy(v[:0]).dtype, device=dev)
                    for k, v in obs.items()
                },
                torch.zeros((b, self.horizon, self.action_dim), device=dev),
                torch.zeros((b, self.horizon, self.action_dim), device=dev) if has_init else None,
                torch.zeros((self.horizon, 1), device=dev) if has_w else None,
            )
            for k, v in obs.items():
                st.obs[k].copy_(torch.from_numpy(np.ascontiguousarray(v)))
            st.noise.normal_(generator=self._gen)

            def run():
                return self._pipeline(st.obs, st.noise, st.init, st.weights, steps, start_step)

            # Lazy initialisations (cuBLAS workspaces, cuDNN autotuning, scheduler tables) must
            # happen before capture, on a side stream as torch.cuda.graphs requires.
            side = torch.cuda.Stream(device=dev)
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side):
                for _ in range(2):
                    run()
            torch.cuda.current_stream(dev).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                st.out = run()
            self._pool = graph.pool()
            st.graph = graph
            st.host_out = torch.empty(st.out.shape, dtype=torch.float32, pin_memory=True)
        self._graphs[key] = st
        self.report["graphs"] = len(self._graphs)
        return st

    def _replay(self, key: tuple, obs, noise, init, weights) -> np.ndarray:
        st = self._graph(key, obs)
        with torch.inference_mode():
            for k, v in obs.items():
                st.obs[k].copy_(torch.from_numpy(np.ascontiguousarray(v)), non_blocking=False)
            if noise is None:
                st.noise.normal_(generator=self._gen)
            else:
                st.noise.copy_(torch.from_numpy(np.asarray(noise, dtype=np.float32)))
            if st.init is not None:
                st.init.copy_(torch.from_numpy(init))
            if st.weights is not None:
                st.weights.copy_(torch.from_numpy(weights))
            st.graph.replay()
            st.host_out.copy_(st.out, non_blocking=True)
            torch.cuda.current_stream(self.device).synchronize()
            return st.host_out.numpy().copy()

    # -------------------------------------------------------------------- API
    def predict_batch(
        self,
        obs: Mapping,
        num_steps: int | None = None,
        start_step: int = 0,
        init: np.ndarray | None = None,
        weights: np.ndarray | None = None,
        noise: np.ndarray | None = None,
    ) -> np.ndarray:
        """Batched raw obs ``{key: (B, To, ...)}`` -> raw actions (B, Tp, A).

        ``init`` (B, Tp, A) normalized, with ``start_step`` > 0: warm start. ``weights`` (Tp, 1):
        RTC soft mask toward ``init``. ``noise`` (B, Tp, A): the initial draw.
        """
        steps = int(num_steps or self.num_steps)
        b = next(iter(obs.values())).shape[0]
        key = (b, steps, start_step, init is not None, weights is not None)
        if self.cuda and self.cfg.cuda_graph and key not in self._eager_keys:
            try:
                return self._replay(key, obs, noise, init, weights)
            except Exception as e:  # noqa: BLE001 - any capture failure: serve eagerly, say why
                log.warning(
                    "CUDA graph capture failed for %s (%s); serving this configuration eagerly", key, e
                )
                self._graphs.pop(key, None)
                self._eager_keys.add(key)
                self.report.setdefault("graph_failures", []).append(f"{key}: {e}"[:300])
        return self._eager(obs, noise, init, weights, steps, start_step)

    def predict(
        self,
        obs: Mapping,
        prior: Prior | np.ndarray | None = None,
        start_time: float = 0.0,
        num_steps: int | None = None,
        noise: np.ndarray | None = None,
    ) -> ActionChunk:
        """Observation history ``{key: (To, ...)}`` raw -> ActionChunk (raw units) from the current step.

        ``prior``: the plan already scheduled from ``start_time`` on (a scheduler ``Prior`` or
        raw actions (T, A)). With warm start enabled it initialises the sampler; a ``Prior``
        with nonzero RTC weights also pins the new chunk's prefix to it.
        """
        batch = self._batch(obs)
        steps = int(num_steps or self.num_steps)
        start_step, init, weights = 0, None, None
        if prior is not None:
            init, weights = build_init(
                prior, self.pc.n_obs_steps, self.horizon, self._act_scale, self._act_offset
            )
            if self.cfg.warm_start.enabled:
                steps, start_step = warm_steps(self.cfg.warm_start, steps)
            elif weights is None:
                init = None  # nothing to use the prior for
        if init is not None:
            init = init[None]
        noise = (
            None if noise is None else np.asarray(noise, np.float32).reshape(1, self.horizon, self.action_dim)
        )
        actions = self.predict_batch(batch, steps, start_step, init, weights, noise)[0]
        return ActionChunk(
            actions=actions[self.pc.n_obs_steps - 1 :].astype(np.float32),
            start_time=start_time,
            dt=1.0 / self.pc.fps,
        )

    @property
    def config(self):
        """The policy's config (part of the ``Predictor`` protocol)."""
        return self.pc

    def reset(self) -> None:
        """New episode: nothing per-episode is kept (graphs and buffers stay)."""
        self.policy.reset()

    def reseed(self, seed: int) -> None:
        """Restart the sampler's noise from ``seed`` (evaluations: every policy compared on an
        episode draws the same noise there, so A/B differences are the policies')."""
        self._gen.manual_seed(int(seed))

    def memory(self) -> dict:
        """Peak GPU memory (MB) on CUDA; empty on CPU."""
        if not self.cuda:
            return {}
        return {
            "gpu_mem_allocated_mb": torch.cuda.max_memory_allocated(self.device) / 2**20,
            "gpu_mem_reserved_mb": torch.cuda.max_memory_reserved(self.device) / 2**20,
        }

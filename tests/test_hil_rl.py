"""HIL-SERL / RLIF core: RLPD batches, SAC critic, reward classifier, gripper critic, buffers,
the simulated human, and a tiny in-process experiment on the real MuJoCo tabletop."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from robot_policy.hil.rl.agent import RLConfig, SACAgent, rlpd_minibatches, rlpd_sizes
from robot_policy.hil.rl.buffer import ReplayBuffer, add_transitions
from robot_policy.hil.rl.gripper import GripperCritic, grip_index, toggles
from robot_policy.hil.rl.human import HumanConfig, SimulatedHuman
from robot_policy.hil.rl.reward import RewardConfig, choose_threshold, metrics, train_classifier

SPEC = {"state": (3,), "gripper_cmd": (1,)}


def transitions(
    n: int, rng: np.random.Generator, marker: float = 0.0, intervened=None
) -> dict[str, np.ndarray]:
    s = rng.normal(size=(n, 3)).astype(np.float32)
    return {
        "obs/state": s,
        "obs/gripper_cmd": np.full((n, 1), -1.0, np.float32),
        "next_obs/state": rng.normal(size=(n, 3)).astype(np.float32),
        "next_obs/gripper_cmd": np.full((n, 1), -1.0, np.float32),
        "action": rng.uniform(-1, 1, (n, 3)).astype(np.float32),
        "reward": np.full(n, marker, np.float32),
        "done": np.ones(n, np.float32),
        "intervened": np.zeros(n, bool) if intervened is None else np.asarray(intervened, bool),
        "intervention_start": np.zeros(n, bool),
    }


def test_rlpd_minibatches_are_exact_halves_from_the_right_buffers():
    rng = np.random.default_rng(0)
    cfg = RLConfig(batch_size=8, utd=3, hidden=[16])
    n_on, n_off = rlpd_sizes(cfg)
    assert (n_on, n_off) == (12, 12)
    online, offline = ReplayBuffer(100), ReplayBuffer(100)
    online.add(transitions(50, rng, marker=1.0))
    offline.add(transitions(50, rng, marker=-1.0))
    on, off = online.sample(n_on, rng), offline.sample(n_off, rng)
    mbs = rlpd_minibatches(on, off, cfg.batch_size, cfg.utd)
    assert len(mbs) == cfg.utd
    for i, mb in enumerate(mbs):
        assert len(mb["reward"]) == 8
        assert (mb["reward"][:4] == 1.0).all() and (mb["reward"][4:] == -1.0).all()
        np.testing.assert_array_equal(mb["obs/state"][:4], on["obs/state"][4 * i : 4 * i + 4])
        np.testing.assert_array_equal(mb["obs/state"][4:], off["obs/state"][4 * i : 4 * i + 4])
    agent = SACAgent(cfg, SPEC, 4)
    with pytest.raises(ValueError, match="needs 12 online and 12 offline"):
        agent.update(online.sample(10, rng), off)
    assert "critic_loss" in agent.update(on, off)


def test_interventions_go_to_both_buffers():
    rng = np.random.default_rng(1)
    online, offline = ReplayBuffer(10), ReplayBuffer(10)
    add_transitions(online, offline, transitions(4, rng, intervened=[False, True, True, False]))
    assert len(online) == 4 and len(offline) == 2
    assert offline.all()["intervened"].all()


def test_sac_critic_updates_reduce_td_error():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = RLConfig(
        batch_size=64,
        utd=2,
        hidden=[64, 64],
        gripper_critic=False,
        lr=1e-3,
        init_temperature=0.01,
        discount=0.5,
    )
    agent = SACAgent(cfg, SPEC, 3)

    def batch(n):  # a well-posed TD problem: reward and termination are functions of (s, a)
        t = transitions(n, rng)
        t["reward"] = (t["obs/state"][:, 0] + t["action"][:, 0]).astype(np.float32)
        t["next_obs/state"] = t["obs/state"].copy()  # a self-loop where not terminal: bootstraps
        t["done"] = (t["obs/state"][:, 1] > 0).astype(np.float32)
        return t

    held = batch(256)
    before = agent.td_error(held)
    for _ in range(40):
        agent.update(batch(64), batch(64))
    after = agent.td_error(held)
    assert after < 0.3 * before, (before, after)


def test_agent_checkpoint_and_actor_weights_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    cfg = RLConfig(batch_size=8, hidden=[16])
    a = SACAgent(cfg, SPEC, 4)
    a.fit_normalizer(transitions(20, rng))
    a.update(transitions(8, rng), transitions(8, rng))
    a.save(tmp_path / "agent")
    b = SACAgent.load(tmp_path / "agent")
    assert b.updates == 1
    for k, v in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[k], v)
    c = SACAgent(cfg, SPEC, 4)
    c.load_actor_state(a.actor_state())
    obs = {"state": np.ones(3, np.float32), "gripper_cmd": np.array([-1.0], np.float32)}
    np.testing.assert_allclose(c.act(obs, deterministic=True), a.act(obs, deterministic=True))
    assert a.act(obs, deterministic=True).shape == (4,)


def test_gripper_critic_learns_the_right_class_and_pays_the_toggle_penalty():
    torch.manual_seed(0)
    grip = torch.tensor([-1.0, 0.0, 1.0, 1.0, -1.0])
    state = torch.tensor([1.0, 1.0, -1.0, 1.0, -1.0])
    assert grip_index(grip).tolist() == [0, 1, 2, 2, 0]
    assert toggles(grip, state).tolist() == [1.0, 0.0, 1.0, 0.0, 0.0]  # close-while-closed is no toggle
    critic = GripperCritic(2, [32], toggle_penalty=0.1, tau=0.05)
    assert critic.penalized_reward(torch.ones(5), grip, state).tolist() == pytest.approx([0.9, 1, 0.9, 1, 1])
    opt = torch.optim.Adam(critic.q.parameters(), lr=1e-2)
    # Feature = (gripper state, wants closed). Reward 1 if the gripper ends closed and that is wanted
    # or ends open and that is not; terminal. Open + want closed -> close; closed + want open -> open;
    # already right -> stay (closing again would earn the same reward but not toggling is free).
    feats, grips, states, rewards = [], [], [], []
    for s in (-1.0, 1.0):
        for want in (0.0, 1.0):
            for g in (-1.0, 0.0, 1.0):
                end = s if g == 0 else g
                feats.append([s, want])
                grips.append(g)
                states.append(s)
                rewards.append(float((end > 0) == (want > 0)))
    f, g, s, r = (torch.tensor(x) for x in (feats, grips, states, rewards))
    for _ in range(400):
        loss = critic.loss(f, f, g, s, r, torch.ones_like(r), 0.97)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        q = critic.values(torch.tensor([[-1.0, 1.0], [1.0, 0.0], [-1.0, 0.0]]))
    assert q[0].argmax() == 2  # open, wants closed -> close
    assert q[1].argmax() == 0  # closed, wants open -> open
    assert q[2].argmax() in (0, 1)  # open, wants open -> not close
    assert float(q[0, 2]) == pytest.approx(0.9, abs=0.05)  # reward 1 minus the toggle penalty


def test_classifier_trains_and_thresholds_on_synthetic_frames():
    rng = np.random.default_rng(0)
    n_eps, t = 24, 12
    label = np.zeros((n_eps, t), np.float32)
    label[:, 8:] = 1.0  # success in the last third of every episode
    images = rng.integers(0, 60, (n_eps, t, 32, 32, 3)).astype(np.uint8)
    images[label > 0, 8:20, 8:20] = 220  # a bright patch is "the cube lifted"
    state = rng.normal(size=(n_eps, t, 2)).astype(np.float32)
    frames = {
        "label": label.reshape(-1),
        "episode": np.repeat(np.arange(n_eps), t),
        "image/cam": images.reshape(-1, 32, 32, 3),
        "state": state.reshape(-1, 2),
    }
    cfg = RewardConfig(inputs="image", encoder_width=4, features=8, hidden=16, steps=120, max_fpr=0.05)
    clf, report = train_classifier(frames, cfg)
    assert report.episodes == round(0.3 * n_eps)
    assert 0.5 <= report.threshold <= 1.0
    assert report.recall > 0.9 and report.false_positive_rate <= 0.05 and report.precision > 0.9
    obs = {"cam_rgb": frames["image/cam"][11], "state": frames["state"][11]}
    assert clf.reward(obs) == 1.0
    obs = {"cam_rgb": frames["image/cam"][0], "state": frames["state"][0]}
    assert clf.reward(obs) == 0.0


def test_choose_threshold_bounds_the_false_positive_rate():
    prob = np.array([0.1, 0.2, 0.3, 0.4, 0.95, 0.6, 0.7, 0.8, 0.9, 0.99])
    label = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1], float)
    t = choose_threshold(prob, label, max_fpr=0.0, min_threshold=0.5)
    assert t > 0.95 and metrics(prob, label, t)["false_positive_rate"] == 0.0
    t = choose_threshold(prob, label, max_fpr=0.2, min_threshold=0.5)  # one negative may pass
    assert t == pytest.approx(0.5)
    assert metrics(prob, label, t) == {"precision": 5 / 6, "recall": 1.0, "false_positive_rate": 0.2}


class FakeEnv:
    """Scripted progress / knock values for the human's rule."""

    def __init__(self, progress, knocked=None):
        self.p, self.k, self.i = progress, knocked or [0.0] * len(progress), 0
        self.takeovers = self.releases = 0

    def progress(self):
        return self.p[self.i]

    def knocked(self):
        return self.k[self.i]

    def expert_takeover(self):
        self.takeovers += 1

    def expert_release(self):
        self.releases += 1


def test_simulated_human_intervenes_exactly_under_the_rule():
    cfg = HumanConfig(patience=3, min_gain=0.01, hold_steps=2, knock_m=0.03)
    # Progress improves for 3 steps, then by less than min_gain: 3 stalled steps -> takeover at step 5,
    # the expert drives steps 5 and 6 (hold_steps 2), hands back at 7; then progress resumes.
    prog = [0.0, 0.02, 0.04, 0.045, 0.049, 0.048, 0.05, 0.05, 0.05, 0.07, 0.085, 0.1]
    env, human = FakeEnv(prog), SimulatedHuman(cfg)
    flags = []
    for i in range(len(prog)):
        env.i = i
        flags.append(human.update(env))
    assert [f[0] for f in flags] == [False] * 5 + [True, True] + [False] * 5
    assert [f[1] for f in flags] == [False] * 5 + [True] + [False] * 6
    assert env.takeovers == 1 and env.releases == 1 and human.reason == "stalled"
    # A knocked cube triggers at once, measured from where it was at the last handback.
    env, human = FakeEnv([0.0, 0.1, 0.2, 0.3], knocked=[0.0, 0.01, 0.05, 0.05]), SimulatedHuman(cfg)
    out = []
    for i in range(4):
        env.i = i
        out.append(human.update(env)[1])
    assert out == [False, False, True, False] and human.reason == "knocked"
    assert SimulatedHuman(HumanConfig(enabled=False)).update(FakeEnv([0.0])) == (False, False)


def test_buffer_save_load_round_trip_and_bounded_capacity(tmp_path):
    rng = np.random.default_rng(3)
    buf = ReplayBuffer(8)
    first, second = transitions(5, rng, marker=1.0), transitions(6, rng, marker=2.0, intervened=[True] * 6)
    buf.add(first)
    buf.add(second)
    assert len(buf) == 8 and buf.added == 11
    rows = buf.all()
    np.testing.assert_array_equal(rows["reward"], [1, 1] + [2] * 6)  # the 3 oldest were overwritten
    buf.save(tmp_path / "online")
    assert not list(tmp_path.glob("*.pkl"))
    loaded = ReplayBuffer.load(tmp_path / "online")
    assert loaded.spec == buf.spec and loaded.added == 11 and len(loaded) == 8
    for k, v in loaded.all().items():
        np.testing.assert_array_equal(v, rows[k])
        assert v.dtype == rows[k].dtype
    with pytest.raises(ValueError, match="shape"):
        buf.add({**transitions(1, rng), "action": np.zeros((1, 5), np.float32)})


def test_tiny_sim_experiment_writes_curves(tmp_path):
    from robot_policy.hil.rl.experiment import ExperimentConfig, run_experiment

    cfg = ExperimentConfig(
        out=str(tmp_path / "hil"),
        modes=["hil_serl", "rlif", "bc"],
        demos=2,
        env_steps=160,
        learning_starts=40,
        eval_every=80,
        curve_episodes=1,
        final_episodes=1,
        classifier_episodes=4,
        bc_steps=10,
        rl=RLConfig(hidden=[32], batch_size=16),
        human=HumanConfig(patience=10, hold_steps=10),
        progress=False,
    )
    results = run_experiment(cfg, log=lambda *_: None)
    out = json.loads((tmp_path / "hil" / "curves.json").read_text())
    assert (tmp_path / "hil" / "curves.png").stat().st_size > 1000
    assert set(out["runs"]) == {"hil_serl", "rlif", "bc"}
    assert "threshold" in out["classifier"]
    for mode in ("hil_serl", "rlif"):
        run = results["runs"][mode]
        assert run["online_transitions"] == cfg.env_steps
        assert run["updates"] > 0
        eps = run["curves"]["episodes"]
        assert eps[-1]["env_steps"] == cfg.env_steps and len(run["curves"]["eval"]) >= 2
        assert all(0.0 <= e["intervention_rate"] <= 1.0 for e in eps)
        assert run["reward_false_positive_episodes"] == sum(e["reward_false_positive"] for e in eps)
        assert (tmp_path / "hil" / mode / "agent" / "agent.safetensors").exists()
    # The untrained policy stalls, so the simulated human intervened; RLIF returns are then negative.
    assert sum(e["interventions"] for e in results["runs"]["rlif"]["curves"]["episodes"]) > 0
    assert min(e["return"] for e in results["runs"]["rlif"]["curves"]["episodes"]) < 0
    assert out["runs"]["bc"]["episodes_in_data"] >= cfg.demos


def test_cli_reward_train_from_a_frames_file(tmp_path, capsys):
    from robot_policy.cli.main import main
    from robot_policy.hil.rl.reward import SuccessClassifier, save_frames

    rng = np.random.default_rng(4)
    n_eps, t = 20, 10
    state = rng.normal(size=(n_eps * t, 3)).astype(np.float32)
    label = (state[:, 0] > 0.5).astype(np.float32)
    save_frames(
        tmp_path / "f.safetensors",
        {"label": label, "episode": np.repeat(np.arange(n_eps), t), "state": state},
    )
    rc = main(
        [
            "hil",
            "reward",
            "train",
            "--frames",
            str(tmp_path / "f.safetensors"),
            "--inputs",
            "state",
            "--steps",
            "150",
            "--out",
            str(tmp_path / "clf"),
            "--no-progress",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "false-positive rate" in out and "threshold" in out
    clf = SuccessClassifier.load(tmp_path / "clf")
    assert json.loads((tmp_path / "clf" / "classifier.json").read_text())["report"]["recall"] > 0.8
    assert clf.reward({"state": np.array([2.0, 0, 0], np.float32)}) == 1.0
    assert main(["hil", "reward", "train", "--frames", str(tmp_path / "missing.safetensors")]) == 2


def test_rejected_successes_retrain_the_classifier_out_of_its_false_positives():
    """A classifier trained where success and failure differ in x only calls every large-x state
    success. The human rejects those where the task is not done (y < 0): no reward, the episode
    goes on, and after ``relabel_every`` rejections the retrained classifier rejects them itself
    while still recognising real successes."""
    from robot_policy.hil.rl.relabel import VerifiedClassifier

    rng = np.random.default_rng(0)
    n_eps, t = 30, 20
    label = np.zeros((n_eps, t), np.float32)
    label[:, 12:] = 1.0
    x = np.where(label > 0, rng.uniform(1.5, 2.5, label.shape), rng.uniform(-2.0, 0.0, label.shape))
    y = np.where(label > 0, rng.uniform(0.5, 1.5, label.shape), rng.uniform(-1.5, 1.5, label.shape))
    frames = {
        "label": label.reshape(-1),
        "episode": np.repeat(np.arange(n_eps), t),
        "state": np.stack([x, y], -1).reshape(-1, 2).astype(np.float32),
    }
    clf, _ = train_classifier(frames, RewardConfig(inputs="state", hidden=16, steps=300))

    def obs(a, b):
        return {"state": np.array([a, b], np.float32)}

    fooled = [obs(2.0 + 0.1 * k, -1.0 - 0.05 * k) for k in range(5)]
    assert all(clf.reward(o) == 1.0 for o in fooled)  # the adversary's target
    logs = []
    verified = VerifiedClassifier(clf, frames, relabel_every=5, log=logs.append)
    for o in fooled:
        assert verified(o, False) == (0.0, False)  # rejected: no reward, the episode goes on
    assert len(verified.retrains) == 1 and "retrained with 5 rejected" in logs[-1]
    assert verified.classifier is not clf
    assert verified.classifier.reward(obs(2.1, -1.1)) == 0.0
    assert verified(obs(2.0, 1.0), True) == (1.0, True)  # a real success still counts
    assert verified(obs(-1.0, 0.0), False) == (0.0, False)
    summary = verified.summary()
    assert summary["human_rejections"] == 5 and summary["confirmed_successes"] == 1
    with pytest.raises(ValueError, match="relabel_every"):
        VerifiedClassifier(clf, frames, relabel_every=0)


def test_rejected_frames_keep_the_labelled_frames_layout_for_an_image_classifier():
    """An image classifier's labelled frames also carry the state: a rejected frame is stored
    with every key they have, so the retraining set concatenates (a crash here once ended a run)."""
    from robot_policy.hil.rl.relabel import VerifiedClassifier
    from robot_policy.hil.rl.reward import SuccessClassifier

    cfg = RewardConfig(inputs="image", encoder_width=4, features=8, hidden=16, steps=5)
    clf = SuccessClassifier(cfg, 2, ["cam"])
    n = 12
    frames = {
        "label": np.array([0.0, 1.0] * (n // 2), np.float32),
        "episode": np.repeat(np.arange(n // 2), 2),
        "state": np.zeros((n, 2), np.float32),
        "image/cam": np.zeros((n, 16, 16, 3), np.uint8),
    }
    verified = VerifiedClassifier(clf, frames, relabel_every=100, log=lambda *_: None)
    obs = {"state": np.ones(2, np.float32), "cam_rgb": np.full((16, 16, 3), 7, np.uint8)}
    verified.rejected.append(verified._frame(obs))
    data = verified.training_frames()
    assert set(data) == set(frames) | {"hard"}
    assert len({len(v) for v in data.values()}) == 1 and len(data["label"]) == n + 1
    assert data["label"][n] == 0.0 and (data["image/cam"][n] == 7).all()
    assert data["hard"].tolist() == [False] * n + [True]

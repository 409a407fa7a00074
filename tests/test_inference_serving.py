"""One serving config: validation, and the node parameters / CLI flags generated from it."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import pytest

from robot_policy.inference import EngineConfig, SchedulerConfig, ServingConfig, WarmStartConfig
from robot_policy.inference.serving import add_serving_args, configure, exposed, serving_from_args

ROOT = Path(__file__).resolve().parents[1]


def test_configs_are_frozen_and_validated_naming_field_and_value():
    cfg = ServingConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.engine.num_steps = 3
    for bad, match in [
        (lambda: EngineConfig(precision="fp8"), r"EngineConfig.precision: 'fp8'"),
        (lambda: EngineConfig(device="gpu"), r"EngineConfig.device: 'gpu'"),
        (lambda: SchedulerConfig(mode="fast"), r"SchedulerConfig.mode: 'fast'"),
        (lambda: WarmStartConfig(run_steps=5, schedule_steps=4), r"run_steps=5 exceeds schedule_steps=4"),
        (lambda: ServingConfig(simulated_latency="-1"), r"simulated_latency must be >= 0"),
    ]:
        with pytest.raises(ValueError, match=match):
            bad()
    assert ServingConfig(simulated_latency="0.08").latency_seconds(1.0) == 0.08
    assert ServingConfig().latency_seconds(0.3) == 0.3


def test_policy_node_parameters_keep_their_names_and_defaults():
    from robot_policy.inference.serving import SETTINGS

    node = ServingConfig(engine=EngineConfig(device="cpu", threads=1))
    params = {e.name: e.default for e in exposed(node, "ros")}
    assert params == {
        "device": "cpu",
        "torch_threads": 1,
        "num_inference_steps": 0,
        "sampler": "",
        "precision": "auto",
        "warm_start_steps": 0,
        "warm_schedule_steps": 0,
        "scheduler_mode": "async",
        "rtc": False,
    }
    assert all(e.doc for e in exposed(node, "ros"))  # every parameter has a description
    # Launch files pass only names the node declares.
    for launch in (ROOT / "launch").glob("*.xml"):
        for node_xml in re.findall(r'<node[^>]*exec="policy_node".*?</node>', launch.read_text(), re.S):
            for name in re.findall(r'<param name="([^"]+)"', node_xml):
                assert name in {*params, "checkpoint", "server", "hardware", "max_obs_age", "autostart"}, (
                    launch,
                    name,
                )
    cfg = configure(node, "ros", {"warm_start_steps": 3, "warm_schedule_steps": 10, "scheduler_mode": "sync"})
    assert cfg.engine.warm_start == WarmStartConfig(run_steps=3, schedule_steps=10)
    assert cfg.scheduler.mode == "sync" and cfg.engine.threads == 1
    with pytest.raises(ValueError, match=r"exceeds schedule_steps=4.*warm_start_steps=5"):
        configure(node, "ros", {"warm_start_steps": 5, "warm_schedule_steps": 4})
    with pytest.raises(ValueError, match="unknown serving setting"):
        configure(node, "ros", {"warm_start": 1})
    assert {s.path for s in SETTINGS} >= {"engine.num_steps", "scheduler.mode", "engine.warm_start.run_steps"}


def test_cli_flags_are_generated_from_the_fields():
    defaults = ServingConfig(engine=EngineConfig(device="cpu"), scheduler=SchedulerConfig(mode="sync"))
    p = argparse.ArgumentParser()
    add_serving_args(p, defaults)
    flags = {a for action in p._actions for a in action.option_strings}
    assert {"--steps", "--sampler", "--device", "--precision", "--mode", "--latency"} <= flags
    assert {"--warm-start", "--warm-schedule", "--rtc"} <= flags
    assert serving_from_args(p.parse_args([]), defaults) == defaults
    argv = ["--mode", "async", "--latency", "0.1", "--warm-start", "1", "--warm-schedule", "4", "--rtc"]
    cfg = serving_from_args(p.parse_args([*argv, "--steps", "4", "--precision", "fp32"]), defaults)
    assert cfg.scheduler == SchedulerConfig(mode="async", rtc=True)
    assert cfg.engine == EngineConfig(
        device="cpu", num_steps=4, precision="fp32", warm_start=WarmStartConfig(run_steps=1, schedule_steps=4)
    )
    assert cfg.simulated_latency == "0.1"
    with pytest.raises(SystemExit):
        p.parse_args(["--mode", "fast"])  # choices come from the Literal
    sub = argparse.ArgumentParser()
    add_serving_args(sub, defaults, only=("--device", "--warm-start"))
    assert {a for action in sub._actions for a in action.option_strings} == {
        "-h",
        "--help",
        "--device",
        "--warm-start",
    }

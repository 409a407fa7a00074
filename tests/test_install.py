"""The package works installed, not only from a checkout.

Fast tests: how ``robot_policy.resources`` resolves user paths and shipped names.
Slow test: build a wheel, install it (non-editable) into a fresh virtual environment, and run the
CLI from a directory outside the checkout: the scene, robot setups, randomization configs and
launch files must come from the installed package, and ``share/robot_policy`` must hold what ROS 2
users look for. Nothing is downloaded: the wheel is built without build isolation, installed with
``--no-deps --no-index``, and the other dependencies come from the dev venv's site-packages
through a ``.pth`` path line (which does not run that venv's editable-install hook).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from robot_policy import resources
from robot_policy.config import ConfigError
from robot_policy.hardware.config import load_hardware_config, resolve_hardware_path
from robot_policy.sim.randomization import load_randomization

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ("sim", "hardware", "launch")
# What a build needs from the checkout (the rest: datasets, docs, tests, .venv stay out).
SOURCE = (
    "pyproject.toml",
    "setup.py",
    "setup.cfg",
    "package.xml",
    "README.md",
    "resource",
    "robot_policy",
    *SHIPPED,
)


def _shipped_files() -> list[str]:
    return sorted(
        p.relative_to(REPO).as_posix()
        for f in SHIPPED
        for p in (REPO / f).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")
    )


# --- Resolution (checkout).


def test_checkout_is_the_data_root():
    assert resources.source_root() == REPO
    assert resources.data_root() == REPO
    assert resources.shipped_file("sim/tabletop.xml") == REPO / "sim" / "tabletop.xml"


def test_a_user_path_wins_over_a_shipped_name(tmp_path, monkeypatch):
    own = tmp_path / "sim_tabletop.yaml"
    own.write_text(
        (REPO / "hardware" / "sim_tabletop.yaml").read_text().replace("control_hz: 20.0", "control_hz: 10.0")
    )
    assert resolve_hardware_path(own) == own
    assert load_hardware_config(str(own)).control_hz == 10.0
    monkeypatch.chdir(tmp_path)
    assert resolve_hardware_path("sim_tabletop.yaml") == Path("sim_tabletop.yaml")  # relative to the cwd
    # A bare name is the shipped file, whatever the working directory holds.
    assert resolve_hardware_path("sim_tabletop") == REPO / "hardware" / "sim_tabletop.yaml"


def test_repository_relative_paths_work_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    wide = REPO / "sim" / "randomization" / "wide.yaml"
    assert resources.find_file("sim/randomization/wide.yaml", "sim/randomization") == wide
    assert resources.find_file("wide", "sim/randomization") == wide
    assert resources.find_file("wide.yaml", "sim/randomization") == wide
    assert load_randomization("sim/randomization/wide.yaml") == load_randomization("wide")
    assert resolve_hardware_path("hardware/real_panda.yaml") == REPO / "hardware" / "real_panda.yaml"


def test_missing_names_list_where_they_looked_and_what_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as exc:
        load_hardware_config("sim_tabeltop")
    msg = str(exc.value)
    assert str(REPO / "hardware" / "sim_tabeltop.yaml") in msg and str(tmp_path / "sim_tabeltop") in msg
    shipped = sorted(p.stem for p in (REPO / "hardware").glob("*.yaml"))
    assert f"shipped names in the checkout {REPO}/hardware: {shipped}" in msg
    with pytest.raises(ConfigError, match=r"missing\.yaml does not exist"):
        load_hardware_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"shipped configs: \['default', 'none', 'target_world', 'wide'\]"):
        load_randomization("wdie")
    assert resources.shipped_names("launch", (".launch.xml",)) == ["real", "record", "sim"]


# --- Installed (wheel into a fresh venv).


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert p.returncode == 0, f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    return p


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv dir, env for its commands, working directory outside the checkout)."""
    tmp = tmp_path_factory.mktemp("install")
    # Build from a copy: an in-tree build would write build/ and *.egg-info into the checkout
    # while other processes use it.
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "_data", "build")
    for name in SOURCE:
        p = REPO / name
        (shutil.copytree(p, src / name, ignore=ignore) if p.is_dir() else shutil.copy2(p, src / name))
    wheels = tmp / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(wheels), str(src)])
    (wheel,) = wheels.glob("robot_policy-*.whl")

    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    vpy = venv / "bin" / "python"
    site = Path(
        _run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    )
    # Dependencies (torch, mujoco, zarr, ...) from the dev venv: a path line only, so that venv's
    # .pth hooks (its editable robot_policy finder among them) do not run here.
    (site / "zz_dev_venv_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([*pip, "--python", str(vpy), "install", "--no-deps", "--no-index", str(wheel)])

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "FASTDDS_DEFAULT_PROFILES_FILE", "VIRTUAL_ENV")
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONNOUSERSITE"] = "1"
    work = tmp / "work"  # outside the checkout: no sim/, hardware/, launch/ to fall back on
    work.mkdir()
    return venv, env, work


@pytest.mark.slow
def test_installed_package_runs_from_outside_the_checkout(installed):
    venv, env, work = installed
    rp = str(venv / "bin" / "robot-policy")

    def run(*args):
        out = _run(list(args), cwd=work, env=env)
        return out.stdout + out.stderr

    # The installed copy is what gets imported, and it finds its files in the package.
    probe = run(
        str(venv / "bin" / "python"),
        "-c",
        "import robot_policy, robot_policy.resources as r\n"
        "from robot_policy.hardware.config import resolve_hardware_path as h\n"
        "from robot_policy.sim.randomization import load_randomization, DEFAULT_RANDOMIZATION\n"
        "load_randomization('sim/randomization/wide.yaml')\n"
        "print(robot_policy.__file__, r.source_root(), r.data_root(), h('real_panda'), DEFAULT_RANDOMIZATION.is_file(), sep='\\n')",
    )
    pkg_file, source_root, data_root, hw, default_ok = probe.split()
    assert not Path(pkg_file).is_relative_to(REPO) and Path(pkg_file).is_relative_to(venv), pkg_file
    assert source_root == "None" and Path(data_root) == Path(pkg_file).parent / "_data"
    assert Path(hw) == Path(data_root) / "hardware" / "real_panda.yaml" and default_ok == "True"
    for rel in _shipped_files():
        assert (Path(data_root) / rel).read_bytes() == (REPO / rel).read_bytes(), rel

    # share/robot_policy: what ros2 launch and $(find-pkg-share robot_policy) see.
    share = venv / "share" / "robot_policy"
    assert (venv / "share" / "ament_index" / "resource_index" / "packages" / "robot_policy").is_file()
    for rel in [*_shipped_files(), "package.xml"]:
        assert (share / rel).read_bytes() == (REPO / rel).read_bytes(), rel
    assert (share / "config" / "fastdds_shm.xml").is_file() and (
        share / "config" / "fastdds_shm_localhost.xml"
    ).is_file()

    out = run(rp, "sim", "tasks")
    assert "tabletop:" in out, out

    out = run(
        rp, "sim", "collect", "--task", "tabletop", "--episodes", "1", "--out", "tt.zarr",
        "--randomization", "sim/randomization/wide.yaml", "--keep-failures",
    )  # fmt: skip
    assert (work / "tt.zarr").is_dir(), out

    # Every launch file, by bare name and by its share path (--dry-run resolves the executables).
    for name in ("sim", "record"):
        for target in (name, str(share / "launch" / f"{name}.launch.xml")):
            out = run(rp, "launch", target, "--dry-run")
            assert f"{venv}/bin/sim_node --ros-args" in out and str(REPO) not in out, out
    out = run(rp, "launch", "real", "hardware:=real_panda", "--show-args")
    assert f"{share}/config/fastdds_shm.xml" in out and str(REPO) not in out, out
    out = run(rp, "launch", "real", "hardware:=fr3_sim", "--dry-run")
    assert f"{venv}/bin/robot_node --ros-args" in out and f"{venv}/bin/camera_node --ros-args" in out, out

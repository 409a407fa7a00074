#!/usr/bin/env bash
# The two quickstart commands. Each does its own set-up on a fresh machine:
#   ./run.sh demo   -- the main job on the embedded default (simulation, no hardware)
#   ./run.sh test   -- the test suite (what CI runs)
# Anything after the first word is passed on (e.g. ./run.sh test -k store).
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
PY=$VENV/bin/python
EXTRAS="sim,ros,realsense,cameras,franka,ur,xarm,teleop,serve,interop,hil,dev"
# Debian libraries: libusb for pyrealsense2; EGL/OSMesa/GL for headless MuJoCo rendering;
# ffmpeg for mp4 videos; chromium renders the evaluation reports in a test (headless).
APT_PKGS="libusb-1.0-0 libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1 libgl1 libopengl0 libosmesa6 ffmpeg chromium"

log() { printf '\033[1m[run.sh]\033[0m %s\n' "$*" >&2; }

setup_apt() {
  local missing=()
  for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  log "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

setup_venv() {
  if [ ! -x "$PY" ]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
    "$PY" -m pip install -q --upgrade pip
  fi
  # Torch first: on a CPU-only machine torch==2.13.0 is the local CPU wheel; a plain
  # 'torch' requirement would pull several GB of CUDA packages. A GPU machine that already
  # has torch keeps its own build.
  if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    log "installing torch==2.13.0 (CPU build)"
    "$PY" -m pip install -q torch==2.13.0
  fi
  # Reinstall the project only when its requirements changed.
  local stamp=$VENV/.robot_policy_installed
  local want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)-$EXTRAS
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "installing robot_policy[$EXTRAS] (editable)"
    "$PY" -m pip install -q -e ".[$EXTRAS]"
    echo "$want" > "$stamp"
  fi
}

export_env() {
  # Headless MuJoCo: EGL, falling back to OSMesa when EGL cannot create a context.
  if [ -z "${MUJOCO_GL:-}" ]; then
    if MUJOCO_GL=egl "$PY" -c "import mujoco; mujoco.GLContext(8, 8).make_current()" >/dev/null 2>&1; then
      export MUJOCO_GL=egl
    else
      export MUJOCO_GL=osmesa PYOPENGL_PLATFORM=osmesa
    fi
  fi
  export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
  export PATH="$PWD/$VENV/bin:$PATH"
}

cmd=${1:-}
shift || true
case "$cmd" in
  demo)
    setup_apt; setup_venv; export_env
    exec "$VENV/bin/robot-policy" demo "$@"
    ;;
  test)
    setup_apt; setup_venv; export_env
    exec "$PY" -m pytest -q -p no:cacheprovider "$@"
    ;;
  setup)
    setup_apt; setup_venv
    ;;
  *)
    echo "usage: ./run.sh demo [ARGS]   # collect demos in simulation, train, evaluate" >&2
    echo "       ./run.sh test [ARGS]   # run the test suite (pytest args pass through)" >&2
    exit 2
    ;;
esac

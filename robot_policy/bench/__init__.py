"""Benchmarks: one module per ``robot-policy bench NAME`` (see ``robot_policy/cli/bench.py``)."""

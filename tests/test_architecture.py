"""The documented layering is the code's layering: no package imports from its own layer or above.

The layer table is read from docs/architecture.md, so the page and this test cannot disagree.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "robot_policy"
DOC = ROOT / "docs" / "architecture.md"


def documented_layers(text: str) -> dict[str, int]:
    """``{package: layer}`` from the first fenced block of the page: names, then a layer number."""
    block = re.search(r"```\n(.*?)```", text, re.S)
    if block is None:
        raise AssertionError(f"{DOC}: no fenced layer table")
    layers: dict[str, int] = {}
    for line in block.group(1).splitlines():
        m = re.match(r"\s*((?:[A-Za-z_]\w*\s+)+?)\s*(\d+)\s", line + " ")
        if not m:
            continue
        for name in m.group(1).split():
            if name in layers:
                raise AssertionError(f"{DOC}: '{name}' is listed in two layers")
            layers[name] = int(m.group(2))
    return layers


def unit_of(path: Path, package: Path = PACKAGE) -> str:
    """The layered unit a module belongs to: its top-level package, or the top-level module."""
    rel = path.relative_to(package)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imported_units(path: Path) -> list[tuple[int, str]]:
    """(line, unit) for every robot_policy import in the module, function-level ones included."""
    out = []
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "robot_policy":
                names = [f"robot_policy.{a.name}" for a in node.names]
            elif node.module.startswith("robot_policy."):
                names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("robot_policy")]
        for name in names:
            parts = name.split(".")
            out.append((node.lineno, parts[1] if len(parts) > 1 else "__init__"))
    return out


def test_layer_table_parses_and_covers_every_package():
    layers = documented_layers(DOC.read_text())
    units = {unit_of(p) for p in PACKAGE.rglob("*.py")}
    missing = sorted(units - set(layers))
    assert not missing, f"packages/modules missing from the layer table in {DOC}: {missing}"
    stale = sorted(set(layers) - units)
    assert not stale, f"{DOC} lists packages that do not exist: {stale}"


def layering_violations(package: Path, layers: dict[str, int]) -> list[str]:
    out = []
    for path in sorted(package.rglob("*.py")):
        unit = unit_of(path, package)
        for line, target in imported_units(path):
            if target == unit or target not in layers or unit not in layers:
                continue
            if layers[target] >= layers[unit]:
                out.append(
                    f"{path.relative_to(package.parent)}:{line}: {unit} (layer {layers[unit]}) imports "
                    f"{target} (layer {layers[target]})"
                )
    return out


def test_imports_only_point_down():
    violations = layering_violations(PACKAGE, documented_layers(DOC.read_text()))
    assert not violations, "imports that point up or sideways:\n" + "\n".join(violations)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from robot_policy.ros import client\n", [(1, "ros")]),
        ("def f():\n    from robot_policy import video\n", [(2, "video")]),
        ("import robot_policy.data.store\n", [(1, "data")]),
        ("from . import x\n", []),
    ],
)
def test_import_scanner_sees_function_level_and_package_imports(tmp_path, source, expected):
    # The checker itself must catch what the layering forbids, or the test above proves nothing.
    f = tmp_path / "m.py"
    f.write_text(source)
    assert imported_units(f) == expected


def test_upward_and_sideways_imports_are_reported(tmp_path):
    pkg = tmp_path / "robot_policy"
    for rel, src in {
        "data/store.py": "def f():\n    from robot_policy.ros import client\n",  # up
        "sim/env.py": "from robot_policy.nn import unet1d\n",  # sideways (same layer)
        "nn/unet1d.py": "from robot_policy.types import Frame\n",  # down: fine
        "ros/client.py": "from robot_policy.data import store\n",  # down: fine
    }.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(src)
    found = layering_violations(pkg, {"types": 0, "data": 1, "nn": 1, "sim": 1, "ros": 6})
    assert len(found) == 2
    assert "data (layer 1) imports ros (layer 6)" in found[0] and "store.py:2" in found[0]
    assert "sim (layer 1) imports nn (layer 1)" in found[1]


def test_layer_table_rejects_a_package_listed_twice():
    with pytest.raises(AssertionError, match="two layers"):
        documented_layers("```\n data  nn   1 x\n data   2 y\n```\n")

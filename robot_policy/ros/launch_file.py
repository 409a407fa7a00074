"""Parse ROS 2 XML launch files into a list of node processes to start (no rclpy, no launch).

Supports the subset of the ROS 2 XML launch format our files use, with the same meaning as
``ros2 launch``: ``<arg>`` (default, description, choices), ``<let>``, ``<set_env>``/``<set-env>``,
``<node>`` (pkg, exec, name, namespace, output, args, ``on_exit="shutdown"``) with ``<param>``
(value or ``from`` a YAML file), ``<remap>`` and ``<env>``, ``<group>`` with
``<push-ros-namespace>``, ``<include>`` with ``<arg>``, and the ``if``/``unless`` conditions.
Substitutions: ``$(var)``, ``$(env NAME [default])``, ``$(optenv)``, ``$(find-pkg-share PKG)``,
``$(dirname)``, ``$(eval EXPR)`` (Python expressions without builtins).
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[2]


class LaunchError(ValueError):
    """A launch file or argument is invalid; the message names the file and the element."""


@dataclass
class NodeSpec:
    """One process to start."""

    pkg: str
    executable: str
    name: str
    namespace: str = ""
    params: dict[str, str] = field(default_factory=dict)
    param_files: list[str] = field(default_factory=list)
    remaps: list[tuple[str, str]] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    required: bool = False
    """``on_exit="shutdown"``: when this node exits, the whole launch shuts down."""

    def ros_args(self) -> list[str]:
        """The ``--ros-args`` part of the command line, as ``ros2 launch`` builds it."""
        out = ["--ros-args", "-r", f"__node:={self.name}"]
        if self.namespace:
            out += ["-r", f"__ns:={self.namespace}"]
        for f in self.param_files:
            out += ["--params-file", f]
        for k, v in self.params.items():
            out += ["-p", f"{k}:={v if v != '' else chr(39) * 2}"]
        for a, b in self.remaps:
            out += ["-r", f"{a}:={b}"]
        return out


@dataclass
class LaunchDescription:
    """What a launch file resolved to for one set of arguments."""

    nodes: list[NodeSpec]
    env: dict[str, str]
    args: dict[str, str]
    arg_docs: dict[str, tuple[str | None, str]]
    """name -> (default or None when required, description)."""


def find_package_share(pkg: str) -> Path:
    """Share directory of ``pkg``: the ament index (AMENT_PREFIX_PATH, this Python's prefix),
    else, for ``robot_policy`` run from a source checkout, the repository root (same layout)."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    for prefix in prefixes:
        marker = Path(prefix) / "share" / "ament_index" / "resource_index" / "packages" / pkg
        if marker.exists():
            return Path(prefix) / "share" / pkg
    if pkg == "robot_policy":
        return _source_share()
    raise LaunchError(f"package '{pkg}' not found in the ament index (AMENT_PREFIX_PATH) or {sys.prefix}")


def _source_share() -> Path:
    """A share/robot_policy view of a source checkout (editable installs do not install
    data_files): symlinks to package.xml, launch/ and the DDS profiles, in the temp directory."""
    import tempfile

    share = Path(tempfile.gettempdir()) / f"robot_policy_share_{os.getuid()}" / "robot_policy"
    links = {
        "package.xml": _REPO_ROOT / "package.xml",
        "launch": _REPO_ROOT / "launch",
        "config/fastdds_shm.xml": _REPO_ROOT / "robot_policy/ros/fastdds_shm.xml",
        "config/fastdds_shm_localhost.xml": _REPO_ROOT / "robot_policy/ros/fastdds_shm_localhost.xml",
    }
    for rel, target in links.items():
        link = share / rel
        if link.is_symlink() and link.resolve() == target.resolve():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    return share


_SUBST = re.compile(r"\$\(")


def _find_close(s: str, start: int) -> int:
    depth = 0
    quote = None
    for i in range(start, len(s)):
        c = s[i]
        if s[i - 1] == "\\":
            continue  # escaped quote or bracket
        if quote:
            if c == quote:
                quote = None
        elif c in "'\"" and s[i - 1] != "$":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
    raise LaunchError(f"unbalanced '$(' in {s!r}")


class _Context:
    def __init__(self, path: Path, args: dict[str, str], env: dict[str, str]):
        self.path = path
        self.vars = dict(args)
        self.env = env

    def resolve(self, text: str | None) -> str:
        if text is None:
            return ""
        out, i = [], 0
        while True:
            m = _SUBST.search(text, i)
            if not m:
                out.append(text[i:])
                return "".join(out)
            out.append(text[i : m.start()])
            end = _find_close(text, m.start() + 1)
            out.append(self._one(self.resolve(text[m.start() + 2 : end])))
            i = end + 1

    def _one(self, body: str) -> str:
        kind, _, rest = body.strip().partition(" ")
        rest = rest.strip()
        if kind == "var":
            if rest not in self.vars:
                raise LaunchError(f"{self.path.name}: $(var {rest}) is not a declared argument or <let>")
            return self.vars[rest]
        if kind in ("env", "optenv"):
            parts = shlex.split(rest)
            if not parts:
                raise LaunchError(f"{self.path.name}: $({kind}) needs a variable name")
            val = self.env.get(parts[0], os.environ.get(parts[0]))
            if val is None:
                if len(parts) > 1 or kind == "optenv":
                    return parts[1] if len(parts) > 1 else ""
                raise LaunchError(f"{self.path.name}: environment variable {parts[0]} is not set")
            return val
        if kind == "find-pkg-share":
            return str(find_package_share(rest))
        if kind == "dirname":
            return str(self.path.parent)
        if kind == "eval":
            expr = rest[1:-1] if len(rest) >= 2 and rest[0] == rest[-1] and rest[0] in "'\"" else rest
            expr = expr.replace("\\'", "'").replace('\\"', '"')
            try:
                return str(eval(expr, {"__builtins__": {}}, {"true": True, "false": False}))  # noqa: S307
            except Exception as e:
                raise LaunchError(f"{self.path.name}: $(eval {expr}) failed: {e}") from None
        raise LaunchError(f"{self.path.name}: unsupported substitution $({kind} ...)")


def _truthy(value: str, where: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "1"):
        return True
    if v in ("false", "0", ""):
        return False
    raise LaunchError(f"{where}: condition must be true/false, got {value!r}")


def _condition_ok(el: ET.Element, ctx: _Context) -> bool:
    where = f"{ctx.path.name}: <{el.tag}>"
    if "if" in el.attrib and not _truthy(ctx.resolve(el.attrib["if"]), where):
        return False
    if "unless" in el.attrib and _truthy(ctx.resolve(el.attrib["unless"]), where):
        return False
    return True


def _parse_element(el: ET.Element, ctx: _Context, desc: LaunchDescription, ns: str, given: dict) -> None:
    for child in el:
        tag = child.tag.replace("_", "-")
        if not isinstance(tag, str) or not _condition_ok(child, ctx):
            continue
        if tag == "arg":
            name = child.attrib["name"]
            default = child.attrib.get("default")
            desc.arg_docs.setdefault(name, (default, child.attrib.get("description", "")))
            if name in given:
                value = given[name]
            elif default is not None:
                value = ctx.resolve(default)
            else:
                raise LaunchError(f"{ctx.path.name}: argument '{name}' is required; pass {name}:=VALUE")
            choices = child.attrib.get("choices")
            if choices and value not in [c.strip() for c in choices.split(",")]:
                raise LaunchError(
                    f"{ctx.path.name}: argument '{name}' must be one of {choices}, got {value!r}"
                )
            ctx.vars[name] = value
            desc.args[name] = value
        elif tag == "let":
            ctx.vars[child.attrib["name"]] = ctx.resolve(child.attrib["value"])
        elif tag == "set-env":
            ctx.env[child.attrib["name"]] = ctx.resolve(child.attrib["value"])
            desc.env[child.attrib["name"]] = ctx.env[child.attrib["name"]]
        elif tag == "unset-env":
            ctx.env.pop(child.attrib["name"], None)
            desc.env[child.attrib["name"]] = ""
        elif tag == "group":
            scope = dict(ctx.vars)
            _parse_element(child, ctx, desc, ns, given)
            if child.attrib.get("scoped", "true") != "false":
                ctx.vars = scope
        elif tag == "push-ros-namespace":
            # Applies to the rest of the enclosing group (the caller restores nothing: groups
            # are parsed recursively, so a push only affects siblings after it).
            ns_attr = ctx.resolve(child.attrib.get("namespace", child.attrib.get("ns", "")))
            ns = ns_attr if ns_attr.startswith("/") else f"{ns.rstrip('/')}/{ns_attr}"
        elif tag == "include":
            inc_args = {a.attrib["name"]: ctx.resolve(a.attrib["value"]) for a in child if a.tag == "arg"}
            inc = parse_launch_file(ctx.resolve(child.attrib["file"]), inc_args, env=dict(ctx.env))
            desc.nodes.extend(inc.nodes)
            desc.env.update(inc.env)
        elif tag == "node":
            desc.nodes.append(_parse_node(child, ctx, ns))
        elif tag in ("executable", "composable-node", "node-container", "timer"):
            raise LaunchError(f"{ctx.path.name}: <{child.tag}> is not supported by robot-policy launch")
        else:
            raise LaunchError(f"{ctx.path.name}: unknown element <{child.tag}>")


def _parse_node(el: ET.Element, ctx: _Context, ns: str) -> NodeSpec:
    a = {k: ctx.resolve(v) for k, v in el.attrib.items() if k not in ("if", "unless")}
    if "pkg" not in a or "exec" not in a:
        raise LaunchError(f"{ctx.path.name}: <node> needs pkg and exec attributes")
    node_ns = a.get("namespace", a.get("ns", ""))
    if node_ns and not node_ns.startswith("/"):
        node_ns = f"{ns.rstrip('/')}/{node_ns}"
    spec = NodeSpec(
        pkg=a["pkg"],
        executable=a["exec"],
        name=a.get("name", a["exec"]),
        namespace=node_ns or ns,
        args=shlex.split(a.get("args", "")),
        required=a.get("on_exit", "") == "shutdown" or a.get("required", "false") == "true",
    )
    for child in el:
        if not _condition_ok(child, ctx):
            continue
        tag = child.tag
        if tag == "param":
            if "from" in child.attrib:
                spec.param_files.append(ctx.resolve(child.attrib["from"]))
            else:
                spec.params[child.attrib["name"]] = ctx.resolve(child.attrib.get("value", ""))
        elif tag == "remap":
            spec.remaps.append((ctx.resolve(child.attrib["from"]), ctx.resolve(child.attrib["to"])))
        elif tag == "env":
            spec.env[child.attrib["name"]] = ctx.resolve(child.attrib["value"])
        else:
            raise LaunchError(f"{ctx.path.name}: unknown element <{tag}> inside <node name={spec.name}>")
    return spec


def parse_launch_file(
    path: str | Path, args: dict[str, str] | None = None, env: dict | None = None
) -> LaunchDescription:
    """Resolve ``path`` with ``args`` (``name -> value``) into nodes to start."""
    path = Path(path)
    if not path.exists():
        raise LaunchError(f"launch file {path} does not exist")
    if path.suffix != ".xml":
        raise LaunchError(f"{path}: robot-policy launch reads ROS 2 XML launch files (*.launch.xml)")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise LaunchError(f"{path}: invalid XML: {e}") from None
    if root.tag != "launch":
        raise LaunchError(f"{path}: root element must be <launch>, got <{root.tag}>")
    given = dict(args or {})
    ctx = _Context(path, {}, dict(env or {}))
    desc = LaunchDescription(nodes=[], env={}, args={}, arg_docs={})
    _parse_element(root, ctx, desc, "", given)
    unknown = sorted(set(given) - set(desc.arg_docs))
    if unknown:
        raise LaunchError(
            f"{path.name}: unknown argument(s) {unknown}; declared arguments: {sorted(desc.arg_docs)}"
        )
    names = [n.name for n in desc.nodes]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise LaunchError(f"{path.name}: several nodes are named {dup}; give each a unique name")
    return desc


def parse_cli_args(items: list[str]) -> dict[str, str]:
    """``["a:=1", "b:=x"]`` -> ``{"a": "1", "b": "x"}`` (the ``ros2 launch`` argument syntax)."""
    out = {}
    for it in items:
        if ":=" not in it:
            raise LaunchError(f"launch argument {it!r} must look like name:=value")
        k, v = it.split(":=", 1)
        out[k] = v
    return out

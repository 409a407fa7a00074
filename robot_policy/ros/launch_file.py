"""Parse ROS 2 XML launch files into a list of node processes to start (no rclpy, no launch).

Reads the subset of the ROS 2 launch XML format (launch_xml 3.7 + launch_ros 0.28) listed in
``_ACTIONS``/``_NESTED`` below, with the same meaning as ``ros2 launch``. Like the real frontend
it checks the whole file before running anything, branches switched off by ``if``/``unless``
included, and refuses what ``ros2 launch`` refuses, with the same words: an attribute or nested
tag a tag does not take ("Unexpected attribute(s) found in `arg`: {'choices'}"), an unknown tag
("Unrecognized entity of the type: ..."), ``if`` together with ``unless``, a condition that is not
true/false/1/0. So a file that ``robot-policy launch`` accepts is also one ``ros2 launch`` accepts.
What ``ros2 launch`` accepts but this runner does not implement (``respawn``, ``<executable>``,
``<timer>``, composable nodes, ...) is refused too, saying so, instead of being silently ignored.

Substitutions: ``$(var)``, ``$(env NAME [default])``, ``$(optenv)``, ``$(find-pkg-share PKG)``,
``$(dirname)``, ``$(eval EXPR)`` (Python expressions without builtins).
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import sys
import tempfile
import xml.etree.ElementTree as ET
import xml.parsers.expat
from dataclasses import dataclass, field
from pathlib import Path

from robot_policy import resources


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
    extra_ros_args: list[str] = field(default_factory=list)
    """``ros_args="..."``: passed after ``--ros-args`` as written."""

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
        return out + self.extra_ros_args


@dataclass
class LaunchDescription:
    """What a launch file resolved to for one set of arguments."""

    nodes: list[NodeSpec]
    env: dict[str, str]
    args: dict[str, str]
    arg_docs: dict[str, tuple[str | None, str]]
    """name -> (default or None when required, description)."""


# --- The schema: exactly the attributes and nested tags that launch_xml 3.7.1 / launch_ros 0.28
# read in each tag's ``parse`` (DeclareLaunchArgument, SetLaunchConfiguration, SetEnvironmentVariable,
# UnsetEnvironmentVariable, GroupAction, IncludeLaunchDescription, PushROSNamespace, Node with
# ExecuteProcess). Every action takes ``if``/``unless`` (Action.parse).


@dataclass(frozen=True)
class _Tag:
    attrs: frozenset[str]
    """Attributes ros2 launch reads and this runner implements."""
    required: tuple[str, ...] = ()
    children: frozenset[str] = frozenset()
    """Nested (non-action) tags."""
    unsupported: frozenset[str] = frozenset()
    """Attributes or nested tags ros2 launch reads but this runner does not implement."""


def _tag(
    attrs: str, required: str = "", children: str = "", unsupported: str = "", cond: bool = True
) -> _Tag:
    names = set(attrs.split()) | ({"if", "unless"} if cond else set())
    return _Tag(
        frozenset(names), tuple(required.split()), frozenset(children.split()), frozenset(unsupported.split())
    )


_NODE_UNSUPPORTED = (
    "cwd launch-prefix respawn respawn_max_retries respawn_delay sigkill_timeout sigterm_timeout "
    "shell emulate_tty node-name exec_name"
)
_ACTIONS: dict[str, _Tag] = {
    "arg": _tag("name default description", "name", children="choice"),
    "let": _tag("name value", "name value"),
    "set_env": _tag("name value", "name value"),
    "unset_env": _tag("name", "name"),
    "group": _tag("scoped", unsupported="forwarding keep"),  # children: actions
    "push_ros_namespace": _tag("namespace", "namespace"),
    "push-ros-namespace": _tag("namespace", "namespace"),  # launch_ros exposes both spellings
    "include": _tag("file", "file", children="arg"),
    "node": _tag(
        "pkg exec name namespace output args ros_args on_exit",
        "exec",
        children="param remap env",
        unsupported=_NODE_UNSUPPORTED,
    ),
}
_NESTED: dict[tuple[str, str], _Tag] = {
    ("arg", "choice"): _tag("value", "value", cond=False),
    ("include", "arg"): _tag("name value", "name value", cond=False),
    ("node", "remap"): _tag("from to", "from to", cond=False),
    ("node", "env"): _tag("name value", "name value", cond=False),
    ("node", "param"): _tag("name value from", children="param", unsupported="type allow_substs", cond=False),
    ("param", "param"): _tag("name value", "name", children="param", unsupported="type", cond=False),
}
_UNSUPPORTED_ACTIONS = {
    # launch
    "executable", "append_env", "log", "reset_env", "reset", "shutdown", "timer",
    # launch_ros
    "node_container", "load_composable_node", "ros_timer", "set_parameter", "set_parameters_from_file",
    "set_remap", "set_ros_log_dir", "set_use_sim_time",
}  # fmt: skip
_HINTS = {
    ("arg", "choices"): 'ROS 2 launch writes allowed values as children: <arg name="mode" default="a">'
    '<choice value="a"/><choice value="b"/></arg>',
    ("node", "ns"): "write namespace=",
    ("node", "required"): 'ROS 1 syntax: write on_exit="shutdown"',
    ("node", "type"): "ROS 1 syntax: write exec=",
    ("push_ros_namespace", "ns"): "write namespace=",
    ("push-ros-namespace", "ns"): "write namespace=",
}


def _set_repr(names) -> str:
    # The way ros2 launch prints the offending names: a Python set literal.
    return "{" + ", ".join(repr(n) for n in sorted(names)) + "}"


class _Checker:
    """Validates a parsed file against the schema, reporting ``file:line`` and the element."""

    def __init__(self, path: Path, root: ET.Element, lines: dict[int, int]):
        self.path = path
        self.root = root
        self.lines = lines

    def where(self, el: ET.Element) -> str:
        line = self.lines.get(id(el))
        name = el.attrib.get("name")
        what = f'<{el.tag} name="{name}">' if name else f"<{el.tag}>"
        return f"{self.path}:{line} {what}" if line else f"{self.path} {what}"

    def fail(self, el: ET.Element, msg: str) -> None:
        raise LaunchError(f"{self.where(el)}: {msg}")

    def check(self) -> None:
        if self.root.tag != "launch":
            self.fail(self.root, "Expected 'launch' as root tag")
        extra = set(self.root.attrib) - {"deprecated"}
        if extra:
            self.fail(self.root, f"Unexpected attribute(s) found in `launch`: {_set_repr(extra)}")
        self.actions(self.root)

    def actions(self, parent: ET.Element) -> None:
        for el in parent:
            if el.tag == "keep" and parent.tag == "group":
                self.fail(
                    el, "<keep> in <group> is valid ROS 2 launch XML but not supported by robot-policy launch"
                )
            spec = _ACTIONS.get(el.tag)
            if spec is None:
                if el.tag in _UNSUPPORTED_ACTIONS:
                    self.fail(
                        el,
                        f"<{el.tag}> is valid ROS 2 launch XML but not supported by robot-policy launch; "
                        "run this file with ros2 launch",
                    )
                alt = el.tag.replace("-", "_") if "-" in el.tag else el.tag.replace("_", "-")
                hint = f" (did you mean <{alt}>?)" if alt in _ACTIONS else ""
                self.fail(el, f"Unrecognized entity of the type: {el.tag}{hint}; known: {sorted(_ACTIONS)}")
            self.attributes(el, spec)
            if "if" in el.attrib and "unless" in el.attrib:
                self.fail(el, "if and unless conditions can't be used simultaneously")
            if el.tag == "group":
                scoped = el.attrib.get("scoped")
                if scoped is not None and scoped.lower() not in ("true", "false"):
                    self.fail(el, f"attribute 'scoped' must be true or false, got {scoped!r}")
                self.actions(el)
            else:
                self.nested(el, spec)
            if el.tag == "node" and el.attrib.get("on_exit", "shutdown") != "shutdown":
                self.fail(
                    el,
                    f"on_exit must be 'shutdown' (the only value ros2 launch takes), got {el.attrib['on_exit']!r}",
                )

    def attributes(self, el: ET.Element, spec: _Tag) -> None:
        unknown = set(el.attrib) - spec.attrs - spec.unsupported
        if unknown:
            hints = [f"{a}: {_HINTS[(el.tag, a)]}" for a in sorted(unknown) if (el.tag, a) in _HINTS]
            self.fail(
                el,
                f"Unexpected attribute(s) found in `{el.tag}`: {_set_repr(unknown)}"
                + (f" ({'; '.join(hints)})" if hints else "")
                + f"; `{el.tag}` takes: {sorted(spec.attrs | spec.unsupported)}",
            )
        unsupported = set(el.attrib) & spec.unsupported
        if unsupported:
            self.fail(
                el,
                f"attribute(s) {_set_repr(unsupported)} of `{el.tag}` are valid ROS 2 launch XML but not "
                "supported by robot-policy launch; run this file with ros2 launch",
            )
        missing = [a for a in spec.required if a not in el.attrib]
        if missing:
            self.fail(el, f"`{el.tag}` needs the attribute(s) {missing}")

    def nested(self, el: ET.Element, spec: _Tag) -> None:
        tags = {c.tag for c in el}
        unknown = tags - spec.children - spec.unsupported
        if unknown:
            self.fail(
                el,
                f"Unexpected nested tag(s) found in `{el.tag}`: {_set_repr(unknown)}; "
                f"`{el.tag}` takes: {sorted(spec.children) or 'no nested tags'}",
            )
        if tags & spec.unsupported:
            self.fail(el, f"nested {_set_repr(tags & spec.unsupported)} not supported by robot-policy launch")
        for child in el:
            cspec = _NESTED[(el.tag, child.tag)]
            self.attributes(child, cspec)
            if child.tag == "param":
                self.param(child)
            else:
                self.nested(child, cspec)

    def param(self, el: ET.Element) -> None:
        a = el.attrib
        nested = [c for c in el if c.tag == "param"]
        if "from" in a:
            if "name" in a:
                self.fail(el, "name and from attributes are mutually exclusive")
            if len(el):
                self.fail(el, f"Unexpected nested tag(s) found in `param`: {_set_repr({c.tag for c in el})}")
            return
        if "name" not in a:
            self.fail(el, "param Entity should have name or from attribute")
        if "value" in a and nested:
            self.fail(el, "nested parameters and value attributes are mutually exclusive")
        if "value" not in a and not nested:
            self.fail(el, "either a value attribute or nested params are needed")
        self.nested(el, _NESTED[("param", "param")])


# --- Resolution.


def find_package_share(pkg: str) -> Path:
    """Share directory of ``pkg``: the ament index (AMENT_PREFIX_PATH, this Python's prefix),
    else, for ``robot_policy`` without an installed share (checkouts, ``pip install --user``),
    a share view of the files this package runs with (see :func:`_share_view`)."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    for prefix in prefixes:
        marker = Path(prefix) / "share" / "ament_index" / "resource_index" / "packages" / pkg
        if marker.exists():
            return Path(prefix) / "share" / pkg
    if pkg == "robot_policy":
        return _share_view()
    raise LaunchError(f"package '{pkg}' not found in the ament index (AMENT_PREFIX_PATH) or {sys.prefix}")


def _share_view() -> Path:
    """A share/robot_policy layout of the data root (checkout or installed package data): symlinks
    to package.xml, launch/, sim/, hardware/ and the DDS profiles, in the temp directory."""
    root = resources.data_root()
    ros = resources.PACKAGE_DIR / "ros"
    # One view per data root: a checkout and an installed copy used at the same time never share one.
    tag = hashlib.sha1(str(root).encode()).hexdigest()[:10]
    share = Path(tempfile.gettempdir()) / f"robot_policy_share_{os.getuid()}_{tag}" / "robot_policy"
    links = {name: root / name for name in ("package.xml", *resources.SHIPPED_FOLDERS)}
    links["config/fastdds_shm.xml"] = ros / "fastdds_shm.xml"
    links["config/fastdds_shm_localhost.xml"] = ros / "fastdds_shm_localhost.xml"
    for rel, target in links.items():
        link = share / rel
        if link.is_symlink() and link.resolve() == target.resolve():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        # Atomic replace: several processes of one launch may build the view at the same time.
        tmp = link.with_name(f".{link.name}.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        os.replace(tmp, link)
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
    def __init__(self, path: Path, args: dict[str, str], env: dict[str, str], checker: _Checker):
        self.path = path
        self.vars = dict(args)
        self.env = env
        self.checker = checker

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

    def condition_ok(self, el: ET.Element) -> bool:
        for attr, want in (("if", True), ("unless", False)):
            if attr in el.attrib:
                return self._truthy(self.resolve(el.attrib[attr]), el, attr) == want
        return True

    def _truthy(self, value: str, el: ET.Element, attr: str) -> bool:
        # ros2 launch: stripped and lower-cased, true/1 or false/0; anything else (even "") is an error.
        v = value.strip().lower()
        if v in ("true", "1"):
            return True
        if v in ("false", "0"):
            return False
        self.checker.fail(el, f"{attr}= must be true/false/1/0, got {value!r}")
        raise AssertionError  # unreachable: fail() raises


def _parse_element(el: ET.Element, ctx: _Context, desc: LaunchDescription, ns: str, given: dict) -> None:
    for child in el:
        tag = child.tag
        if not ctx.condition_ok(child):
            continue
        if tag == "arg":
            _declare_arg(child, ctx, desc, given)
        elif tag == "let":
            ctx.vars[ctx.resolve(child.attrib["name"])] = ctx.resolve(child.attrib["value"])
        elif tag == "set_env":
            name = ctx.resolve(child.attrib["name"])
            ctx.env[name] = ctx.resolve(child.attrib["value"])
            desc.env[name] = ctx.env[name]
        elif tag == "unset_env":
            name = ctx.resolve(child.attrib["name"])
            ctx.env.pop(name, None)
            desc.env[name] = ""
        elif tag == "group":
            scope = dict(ctx.vars)
            _parse_element(child, ctx, desc, ns, given)
            if child.attrib.get("scoped", "true").lower() != "false":
                ctx.vars = scope
        elif tag in ("push_ros_namespace", "push-ros-namespace"):
            # Applies to the rest of the enclosing group (groups are parsed recursively, so a
            # push only affects the siblings after it).
            ns_attr = ctx.resolve(child.attrib["namespace"])
            ns = ns_attr if ns_attr.startswith("/") else f"{ns.rstrip('/')}/{ns_attr}"
        elif tag == "include":
            inc_args = {ctx.resolve(a.attrib["name"]): ctx.resolve(a.attrib["value"]) for a in child}
            inc = parse_launch_file(ctx.resolve(child.attrib["file"]), inc_args, env=dict(ctx.env))
            desc.nodes.extend(inc.nodes)
            desc.env.update(inc.env)
        elif tag == "node":
            desc.nodes.append(_parse_node(child, ctx, ns))
        else:  # _Checker.check refused it already
            raise AssertionError(f"unchecked tag <{tag}>")


def _declare_arg(el: ET.Element, ctx: _Context, desc: LaunchDescription, given: dict) -> None:
    name = el.attrib["name"]
    default = el.attrib.get("default")
    choices = [c.attrib["value"] for c in el if c.tag == "choice"]
    doc = el.attrib.get("description", "")
    if choices:  # as ros2 launch --show-args words it
        doc = (doc if not doc or doc.endswith(".") else doc + ".") + f" Valid choices are: {choices}"
    desc.arg_docs.setdefault(name, (default, doc.strip()))
    if name in given:
        value = given[name]
    elif default is not None:
        value = ctx.resolve(default)
    else:
        ctx.checker.fail(el, f"argument '{name}' is required; pass {name}:=VALUE")
    if choices and value not in choices:
        ctx.checker.fail(
            el, f"argument '{name}' provided value {value!r} is not valid; valid options are: {choices}"
        )
    ctx.vars[name] = value
    desc.args[name] = value


def _param_items(el: ET.Element, ctx: _Context, prefix: str = "") -> dict[str, str]:
    """``<param name="a"><param name="b" value="1"/></param>`` -> ``{"a.b": "1"}`` (launch_ros nesting)."""
    name = prefix + ctx.resolve(el.attrib["name"])
    if "value" in el.attrib:
        return {name: ctx.resolve(el.attrib["value"])}
    out: dict[str, str] = {}
    for child in el:
        out.update(_param_items(child, ctx, name + "."))
    return out


def _parse_node(el: ET.Element, ctx: _Context, ns: str) -> NodeSpec:
    a = {k: ctx.resolve(v) for k, v in el.attrib.items() if k not in ("if", "unless")}
    node_ns = a.get("namespace", "")
    if node_ns and not node_ns.startswith("/"):
        node_ns = f"{ns.rstrip('/')}/{node_ns}"
    spec = NodeSpec(
        pkg=a.get("pkg", ""),
        executable=a["exec"],
        name=a.get("name", a["exec"]),
        namespace=node_ns or ns,
        args=shlex.split(a.get("args", "")),
        required=a.get("on_exit") == "shutdown",
        extra_ros_args=shlex.split(a.get("ros_args", "")),
    )
    for child in el:
        if child.tag == "param":
            if "from" in child.attrib:
                spec.param_files.append(ctx.resolve(child.attrib["from"]))
            else:
                spec.params.update(_param_items(child, ctx))
        elif child.tag == "remap":
            spec.remaps.append((ctx.resolve(child.attrib["from"]), ctx.resolve(child.attrib["to"])))
        elif child.tag == "env":
            spec.env[ctx.resolve(child.attrib["name"])] = ctx.resolve(child.attrib["value"])
    return spec


def _element_lines(data: bytes) -> list[int]:
    """Start line of every element, in document order (the order of ``Element.iter()``)."""
    p = xml.parsers.expat.ParserCreate()
    lines: list[int] = []
    p.StartElementHandler = lambda name, attrs: lines.append(p.CurrentLineNumber)
    p.Parse(data, True)
    return lines


def check_launch_file(path: str | Path) -> tuple[ET.Element, _Checker]:
    """Read ``path`` and check it against the launch XML schema; returns the root and its checker."""
    path = Path(path)
    if not path.is_file():
        raise LaunchError(f"launch file {path} does not exist")
    if path.suffix != ".xml":
        raise LaunchError(f"{path}: robot-policy launch reads ROS 2 XML launch files (*.launch.xml)")
    data = path.read_bytes()
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise LaunchError(f"{path}: invalid XML: {e}") from None
    checker = _Checker(path, root, dict(zip((id(e) for e in root.iter()), _element_lines(data))))
    checker.check()
    return root, checker


def parse_launch_file(
    path: str | Path, args: dict[str, str] | None = None, env: dict | None = None
) -> LaunchDescription:
    """Check ``path`` against the schema, then resolve it with ``args`` (``name -> value``) into nodes."""
    path = Path(path)
    root, checker = check_launch_file(path)
    given = dict(args or {})
    ctx = _Context(path, {}, dict(env or {}), checker)
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

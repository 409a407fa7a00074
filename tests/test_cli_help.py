"""Every command's --help renders (argparse %-formats help texts taken from docstrings)."""

from __future__ import annotations

import argparse

from robot_policy.cli.main import build_parser


def _walk(parser: argparse.ArgumentParser, path=()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, (*path, name))


def test_every_command_help_renders():
    commands = list(_walk(build_parser()))
    assert len(commands) > 20  # the whole tree was walked, not just the top level
    for path, parser in commands:
        text = parser.format_help()
        assert "usage:" in text, path
    # a docstring with a literal percent sign (the corrector's "80% of all steps")
    collect = dict(commands)[("transic", "collect")]
    assert "80% of all steps" in " ".join(collect.format_help().split())

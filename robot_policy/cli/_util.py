"""Helpers shared by CLI modules."""

from __future__ import annotations

import argparse


def add_group(sub, name: str, help: str, description: str | None = None):
    """Add a command group (e.g. ``dataset``); returns its subparsers object."""
    p = sub.add_parser(
        name,
        help=help,
        description=description or help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=None, _group_parser=p)
    return p.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND")


def add_command(sub, name: str, help: str, description: str | None = None, epilog: str | None = None):
    """Add a leaf command with a teaching description; caller sets ``func`` via set_defaults."""
    return sub.add_parser(
        name,
        help=help,
        description=description or help,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

"""Terminal helpers shared by the CLI and the benchmarks: argparse groups and commands with
teaching help, aligned text tables. Neutral ground so ``cli`` and ``bench`` never import each other's internals."""

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


def print_table(rows: list[dict], columns: list[str] | None = None) -> None:
    """Print a list of dicts as an aligned text table."""
    if not rows:
        print("(no rows)")
        return
    columns = columns or list(rows[0])

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))

"""What ``--help`` shows: module docstrings as plain text (no reStructuredText double backticks) and
the installed policies, each with the first line of what it does."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sglang_ppd.core.policy import available_policies


def plain(doc: str | None) -> str:
    return (doc or "").replace("``", "`")


def policies_epilog(default: str | None = None) -> str:
    """One line per installed policy (the ``sglang_ppd.policies`` entry points). A plugin that fails
    to import is listed with its error instead, so ``--help`` still works."""
    lines = ["policies (installed; parameters with --param/--policy-param k=v, see README):"]
    for name, ep in sorted(available_policies().items()):
        try:
            cls = ep.load()
            module = sys.modules.get(cls.__module__)
            doc = ((module.__doc__ if module else None) or cls.__doc__ or "").strip()
            what = plain(doc.split("\n\n")[0]).replace("\n", " ")
            what = what.split(": ", 1)[1] if what.startswith(f"`{name}`: ") else what
        except Exception as exc:  # a broken plugin must not break --help
            what = f"(cannot load: {type(exc).__name__}: {exc})"
        mark = " (default)" if name == default else ""
        lines.append(f"  {name}{mark}: {what}")
    return "\n".join(lines)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description and epilog as written (line breaks kept), and each flag's default where it
    has one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default: Any = action.default
        # Identity, not ==: a default of 0 is worth showing, and 0 == False.
        if any(default is v for v in (None, False, argparse.SUPPRESS)) or default == [] or "default" in text:
            return text
        return f"{text} (default: %(default)s)".strip()

"""Argument parsing for both command lines: one-line answers to typos.

:class:`Parser` is ``argparse.ArgumentParser`` with two changes, used by
``backstage`` and ``backstage-prefork`` (their processes only):

- an unknown long option is named with the closest known one
  (``--concurency`` → "did you mean --concurrency?"), instead of argparse's
  "unrecognized arguments" that also lists the words it took as values;
- a subcommand reports its own unknown arguments with its own usage line
  (``backstage inspect --foo`` shows ``inspect``'s usage, not the top level's);
- a usage of more than three lines is shortened to ``usage: prog [options] ARGS``
  above the error (``--help`` has the whole of it).
"""

from __future__ import annotations

import argparse
import difflib
import sys
from typing import Any, NoReturn, Sequence

__all__ = ["Parser", "add_version"]


class Parser(argparse.ArgumentParser):
    """``ArgumentParser`` that suggests close option names (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._argv: list[str] = []

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        self._argv = list(sys.argv[1:] if args is None else args)
        ns, extras = super().parse_known_args(self._argv, namespace)
        if extras and self._is_subcommand():
            # left to the top level, they would be reported under its usage line
            self.error(self._unrecognized(extras))
        return ns, extras

    def _is_subcommand(self) -> bool:
        return " " in self.prog  # "backstage inspect", "backstage dlq list"

    def _unknown_options(self, words: Sequence[str]) -> list[str]:
        # argparse's own tables (stable since 3.2): exact option strings, and the
        # unique prefixes it accepts (allow_abbrev)
        out = []
        for word in words:
            if word == "--":
                break
            if word.startswith("-") and len(word) > 1 and not _is_number(word):
                name = word.split("=", 1)[0]
                if name not in self._option_string_actions and not self._get_option_tuples(name):
                    out.append(name)
        return out

    def _unrecognized(self, extras: Sequence[str]) -> str:
        unknown = self._unknown_options(extras)
        return self._explain(unknown) if unknown else f"unrecognized arguments: {' '.join(extras)}"

    def _explain(self, unknown: Sequence[str]) -> str:
        known = [s for s in self._option_string_actions if s.startswith("--")]
        parts = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            parts.append(f"unknown option {name}" + (f" (did you mean {close[0]}?)" if close else ""))
        return "; ".join(parts) + f"; see {self.prog} --help"

    def error(self, message: str) -> NoReturn:
        # "unrecognized arguments: --concurency app" (the value after the typo was taken as
        # the module) or "the following arguments are required": name the typo instead
        unknown = self._unknown_options(self._argv) if self._subparsers is None else []
        if unknown and not message.startswith("unknown option"):
            message = self._explain(unknown)
        usage = self.format_usage()
        if usage.count("\n") > 3:  # a screenful of options would bury the one line that matters
            words = [str(a.metavar or a.dest) for a in self._actions
                     if not a.option_strings and a.help is not argparse.SUPPRESS]
            usage = f"usage: {self.prog} [options] {' '.join(words)}\n"
        self.exit(2, f"{usage}{self.prog}: error: {message}\n")


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def add_version(p: argparse.ArgumentParser) -> None:
    """``--version``: prints ``<prog> <backstage version>``."""
    from .. import __version__

    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")

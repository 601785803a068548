"""The ``cg-analyze`` subcommands: one registry, filled by the command modules (``analysis/cli.py`` imports them).

A command is ``argv -> exit code`` (the arguments after its name). Adding one is one function in its module
plus one ``@COMMANDS.register("name", help=...)`` line and one import in ``analysis/cli.py``.
"""
from __future__ import annotations

from typing import Callable, Sequence

from cg_train.registry import Registry

Command = Callable[[Sequence[str]], int]
COMMANDS: Registry[Command] = Registry("cg-analyze command", "cg-analyze COMMAND")

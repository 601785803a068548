"""What the side-by-side benchmarks share: flags passed through to cg-train, the JSON report and the
rows they add to BENCHMARKS.md."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any, Optional


def split_argv(argv: list[str]) -> tuple[str, list[str], list[str]]:
    """(the command line as given, the benchmark's own flags, the flags after ``--`` for every cg-train run)."""
    if "--" not in argv:
        return shlex.join(argv), argv, []
    cut = argv.index("--")
    return shlex.join(argv), argv[:cut], argv[cut + 1:]


def append_table_rows(path: Path, header: str, table_head: str, rows: str) -> None:
    """Add ``rows`` at the end of the table under ``header`` in ``path`` (both created if missing);
    nothing already in the file is lost."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if header not in text:
        text = text.rstrip("\n") + f"\n\n{header}\n\n{table_head}"
    head, _, tail = text.partition(header)
    table = tail.index("| date")
    end = re.search(r"\n(?!\|)", tail[table:])
    cut = table + end.start() + 1 if end else len(tail)
    path.write_text(head + header + tail[:cut] + rows + tail[cut:])


def publish(report: dict[str, Any], rows: str, json_path: Optional[str], append_path: Optional[str],
            header: str, table_head: str) -> dict[str, Any]:
    """Print the markdown rows; write the JSON report and append the rows where asked."""
    print(rows, end="")
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=1))
    if append_path:
        append_table_rows(Path(append_path), header, table_head, rows)
    return report

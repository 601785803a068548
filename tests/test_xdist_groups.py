"""`pytest -n 2` keeps the tests of one `xdist_group` on one worker (tests/xdist_groups.py): a real 2-worker
session of small tests that record the worker they ran on."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

GROUPED = '''\
import os
import pytest

pytestmark = pytest.mark.xdist_group("cluster")


@pytest.mark.parametrize("i", range(6))
def test_grouped(i):
    with open(os.environ["RAN_ON"], "a") as f:
        f.write(f"grouped {os.environ['PYTEST_XDIST_WORKER']}\\n")
'''

FREE = '''\
import os
import time
import pytest


@pytest.mark.parametrize("i", range(6))
def test_free(i):
    time.sleep(0.2)  # long enough that both workers take some
    with open(os.environ["RAN_ON"], "a") as f:
        f.write(f"free {os.environ['PYTEST_XDIST_WORKER']}\\n")
'''


def run_session(tmp_path: Path, *plugins: str) -> list[tuple[str, str]]:
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    (tmp_path / "test_free.py").write_text(FREE)
    ran_on = tmp_path / "ran_on.txt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "RAN_ON": str(ran_on)}
    result = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-q",
                             "-p", "no:cacheprovider", *plugins, str(tmp_path)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [tuple(line.split()) for line in ran_on.read_text().splitlines()]


def test_a_group_runs_on_one_worker_and_the_rest_on_both(tmp_path: Path) -> None:
    ran = run_session(tmp_path, "-p", "xdist_groups")
    grouped = [worker for kind, worker in ran if kind == "grouped"]
    assert len(grouped) == 6 and len(set(grouped)) == 1, ran
    assert {worker for kind, worker in ran if kind == "free"} == {"gw0", "gw1"}, ran

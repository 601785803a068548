"""The fast path on CPU: its flags against the plain run, torch.compile's fallback, the throughput
benchmark's output (never its timings) and gpu_check.sh's CPU side (argument handling, SKIPs)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cg_train.checks import check_names
from cg_train.config import build_config
from cg_train.errors import ConfigError
from conftest import REPO, assert_same_up_to_rounding, run_cli, train

GPU_CHECK = REPO / "benchmarks" / "gpu_check.sh"


@pytest.fixture(scope="module")
def plain_run(mnist_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plain") / "run"
    assert train(mnist_small, out, "--epochs", "2", "--sample-size", "100", "--corrupt-fraction", "0.5") == 0
    return out


def test_channels_last_and_fused_sgd_train_like_the_plain_path(mnist_small: Path, plain_run: Path,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "fast"
    assert train(mnist_small, out, "--epochs", "2", "--sample-size", "100", "--corrupt-fraction", "0.5", "--channels-last",
                 "--fused-optimizer") == 0
    assert_same_up_to_rounding(plain_run, out)
    assert "img/s)" in (out / "log.txt").read_text()  # the epoch line reports throughput


def test_compile_falls_back_to_eager_when_it_cannot_compile(mnist_small: Path, plain_run: Path,
                                                            tmp_path: Path) -> None:
    """No working C++ compiler (as on many cluster images): one warning, then the eager model, same results."""
    out = tmp_path / "compiled"
    result = run_cli(str(mnist_small), "--output-dir", str(out), "--arch", "simple_cnn", "--batch-size", "32",
                     "--workers", "0", "--lr", "0.05", "--momentum", "0.9", "--weight-decay", "0", "--no-progress",
                     "--epochs", "2", "--sample-size", "100", "--corrupt-fraction", "0.5", "--compile", env={"CXX": "/nonexistent/c++"})
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "--compile: torch.compile does not work on this machine (InductorError" in output
    assert "training without it" in output
    assert_same_up_to_rounding(plain_run, out)


def test_fused_optimizer_is_refused_where_there_is_none() -> None:
    with pytest.raises(ConfigError, match="--fused-optimizer: optimizer RM3 has no fused variant"):
        check_names(build_config(flags={"optim.optimizer": "RM3", "optim.momentum": 0.0, "speed.fused_optimizer": True}))


def test_throughput_smoke_output_is_well_formed(tmp_path: Path) -> None:
    report_file, table = tmp_path / "report.json", tmp_path / "BENCHMARKS.md"
    table.write_text("# Benchmarks\n\nsome earlier section\n")
    result = subprocess.run([sys.executable, "benchmarks/throughput.py", "--smoke", "--json", str(report_file),
                             "--append", str(table), "--machine", "CI"], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(report_file.read_text())
    assert [row["mode"] for row in report["rows"]] == ["synthetic", "real", "paths"]
    for row in report["rows"]:
        assert row["img_s"] > 0 and row["samples"] == 64 and row["epoch_s"] > 0
    assert set(report["summary"]) == {"real_over_synthetic", "paths_overhead"}
    assert report["setup"]["train_gflop_per_image"] > 0
    text = table.read_text()
    assert text.startswith("# Benchmarks\n\nsome earlier section\n")  # nothing already there is lost
    rows = [line for line in text.splitlines() if line.startswith("| 20")]
    assert len(rows) == 3 and all(line.count("|") == 7 and "| CI |" in line for line in rows)


def test_step_overhead_verdicts_bound_each_target_by_the_plain_loops_bare_step() -> None:
    """step_overhead.py's verdicts from hand-made rounds (its arithmetic, not timings): ratios to the same
    round's plain loop, --paths overheads, and whether a faster loader alone (``compute``) or anything that
    keeps the kernels (``compute+reuse``, the bare step with its memory reused) can reach each target."""
    spec = importlib.util.spec_from_file_location("step_overhead", REPO / "benchmarks" / "step_overhead.py")
    step_overhead = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(step_overhead)
    rounds = [{"plain": 100, "compute": 110, "compute+reuse": 125, "torchvision+paths": 105, "dali": 124,
               "dali+paths": 122},
              {"plain": 200, "compute": 230, "compute+reuse": 240, "torchvision+paths": 190, "dali": 250,
               "dali+paths": 248},
              {"plain": 100, "compute": 112, "compute+reuse": 128, "torchvision+paths": 102, "dali": 130,
               "dali+paths": 127}]
    summary = step_overhead.summarise(rounds, list(rounds[0]))
    assert summary["vs_plain"]["dali+paths"] == pytest.approx([1.22, 1.24, 1.27])
    assert summary["paths_overhead"] == {"dali+paths": pytest.approx([124 / 122 - 1, 250 / 248 - 1, 130 / 127 - 1])}
    assert summary["compute_ratio"] == pytest.approx(1.12) and summary["ceiling_ratio"] == pytest.approx(1.25)
    assert summary["targets"] == {"torchvision+paths >= 1.0x plain": True,  # median 1.02
                                  "dali+paths >= 1.3x plain": False,  # median 1.24
                                  "dali+paths: paths <= 2%": True}  # median 1.6 %
    assert summary["reachable"] == {"torchvision+paths": True, "dali+paths": False}
    assert summary["within_ceiling"] == {"torchvision+paths": True, "dali+paths": False}
    without = step_overhead.summarise(rounds, ["plain", "dali+paths"])  # no bounds measured: no verdict on them
    assert without["compute_ratio"] is None and without["reachable"] == without["within_ceiling"] == {}


def gpu_check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(GPU_CHECK), *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHON": sys.executable, **(env or {})})


def test_gpu_check_lists_items_and_refuses_unknown_ones() -> None:
    listed = gpu_check("--list")
    assert listed.returncode == 0
    items = listed.stdout.split()
    assert {"dali-decode", "train-torchvision-bf16", "train-dali-fp16", "channels-last-compile", "paths-cuda",
            "deepspeed-zero2", "sync-debug", "dali-memory", "step-overhead", "throughput"} <= set(items)
    bad = gpu_check("--only", "no-such-item")
    assert bad.returncode == 2 and "unknown item 'no-such-item'" in bad.stderr


def test_gpu_check_skips_every_item_without_a_gpu(tmp_path: Path) -> None:
    """On this CPU machine every item reports SKIP with its reason, and the script still succeeds."""
    result = gpu_check("--work", str(tmp_path), env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.split(":")[0] in {"PASS", "FAIL", "SKIP"}]
    assert len(lines) == len(gpu_check("--list").stdout.split())
    assert all(line.startswith("SKIP: ") and "no CUDA device" in line for line in lines), lines


PAGE_FAULTS_SCRIPT = """
import resource, sys, torch
from cg_train.cli import parse_train_args
from cg_train.engine import fast_path
cfg, _ = parse_train_args(["unused-data-dir", *sys.argv[1:]])
fast_path.configure_backends(cfg, torch.device("cpu"))
faults = []
for _ in range(6):  # 64 MiB, above glibc's largest adaptive mmap threshold (32 MiB): a fresh mapping by default
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16 << 20).sum()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(faults[1:]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_cpu_training_keeps_freed_memory_instead_of_page_faulting_it_in_every_step() -> None:
    """The same 64 MiB tensor made 6 times: by default (--keep-freed-memory) the 2nd to 6th reuse the
    first one's memory (almost no page faults); with --no-keep-freed-memory each is a fresh mapping,
    faulted in page by page (16,384 4-KiB pages, or 32 huge pages where THP is always on)."""
    def faults(*flags: str) -> int:
        result = subprocess.run([sys.executable, "-c", PAGE_FAULTS_SCRIPT, *flags], cwd=REPO, capture_output=True,
                                text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert result.returncode == 0, result.stderr
        return int(result.stdout.split()[-1])

    kept, returned = faults(), faults("--no-keep-freed-memory")
    assert returned >= 32, returned
    assert kept <= returned // 10, (kept, returned)

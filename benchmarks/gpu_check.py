"""Every CUDA-only path of cg-train, checked in minutes on one GPU; run through ``benchmarks/gpu_check.sh``.

Prints one line per item: ``PASS: item (detail)``, ``FAIL: item (detail)`` or ``SKIP: item: reason``
(an item whose needs are missing here: no GPU, no DALI, no DeepSpeed, cg-train's own
dependencies not importable). Exit status: 1 if any item failed, else 0. Items are
independent, so those needing DALI can be run later with ``--only`` once its wheel is there.
Tolerances are stated with each item (docs/throughput.md).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

#: DALI nvJPEG vs libjpeg-turbo on the same files, in 8-bit levels: IDCT and chroma upsampling differ.
DECODE_MEAN_LEVELS, DECODE_P99_LEVELS = 1.0, 8.0
#: resumed vs uninterrupted run on a GPU (cuDNN and atomics need not be bitwise reproducible)
RESUME_LOSS_RTOL, RESUME_ACC_POINTS = 2e-2, 1.0
#: the demo runs: MNIST digits (cg-train prepare-demo), cifar_resnet20 (BatchNorm), 2 epochs
DEMO_ARGS = ["--arch", "cifar_resnet20", "--batch-size", "128", "--epochs", "2", "--sample-size", "500",
             "--corrupt-fraction", "0.5",
             "--no-progress", "--print-freq", "1", "--workers", "4"]


class Skip(Exception):
    """The item cannot run here; the message says why."""


class Failed(Exception):
    """The item ran and its check does not hold."""


ITEMS: dict[str, Callable[["Context"], str]] = {}


def item(name: str) -> Callable[[Callable[["Context"], str]], Callable[["Context"], str]]:
    def register(function: Callable[["Context"], str]) -> Callable[["Context"], str]:
        ITEMS[name] = function
        return function
    return register


class Context:
    def __init__(self, work: Path, benchmarks: Optional[Path], quick: bool):
        self.work, self.benchmarks, self.quick = work, benchmarks, quick
        self._demo: Optional[Path] = None
        self._photos: Optional[Path] = None
        self.runs: dict[str, Path] = {}

    # ------------------------------------------------------------------ what items need
    @staticmethod
    def needs_cuda() -> None:
        try:
            import torch
        except ImportError as exc:
            raise Skip(f"no CUDA device (torch does not import: {exc})") from None
        if not torch.cuda.is_available():
            raise Skip("no CUDA device (torch.cuda.is_available() is False)")

    def needs_cg_train(self) -> None:
        self.needs_cuda()
        try:
            import cg_train.config  # noqa: F401  (omegaconf, the one dependency a bare torch image lacks)
        except ImportError as exc:
            raise Skip(f"cg_train does not import ({exc}); carry its wheels (docs/throughput.md)") from None

    def needs_dali(self) -> None:
        self.needs_cg_train()
        try:
            import nvidia.dali  # noqa: F401
        except ImportError:
            raise Skip("NVIDIA DALI is not installed (pip install -e '.[dali]', or carry the wheel)") from None

    # ------------------------------------------------------------------ data
    @property
    def demo(self) -> Path:
        if self._demo is None:
            self._demo = self.work / "demo-mnist"
            if not (self._demo / "train").exists():
                self.cg_train("prepare-demo", str(self._demo))
        return self._demo

    @property
    def photos(self) -> Path:
        """ImageNet-sized photo-like JPEGs (500x375 and 375x500) in an ImageFolder."""
        if self._photos is None:
            from benchmarks.throughput import write_dataset

            self._photos = self.work / "photos"
            if not (self._photos / "train").exists():
                write_dataset(self._photos, 512 if self.quick else 2560, (375, 500))
        return self._photos

    # ------------------------------------------------------------------ running cg-train
    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                "PYTHONUNBUFFERED": "1"}

    def cg_train(self, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "cg_train", *args], cwd=REPO, env=self.env(),
                                capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise Failed(f"cg-train {' '.join(args[:3])}... exited {result.returncode}: "
                         f"{last_line(result.stderr)}")
        return result

    def benchmark(self, script: str, report: str, args: list[str], passthrough: Sequence[str] = (),
                  what: str = "") -> dict[str, Any]:
        """Run ``benchmarks/<script>`` with ``args`` (its rows appended to ``--benchmarks``' file, if any, and
        ``passthrough`` after ``--`` for its cg-train runs); its JSON report, written to ``<work>/<report>.json``."""
        path = self.work / f"{report}.json"
        command = [sys.executable, f"benchmarks/{script}", *args, "--json", str(path)]
        if self.benchmarks is not None:
            command += ["--append", str(self.benchmarks)]
        if passthrough:
            command += ["--", *passthrough]
        result = subprocess.run(command, cwd=REPO, env=self.env(), capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            raise Failed(f"{what}{last_line(result.stderr)}")
        return json.loads(path.read_text())

    def train(self, name: str, *args: str) -> Path:
        out = self.work / name
        self.cg_train(str(self.demo), "--output-dir", str(out), *DEMO_ARGS, *args)
        self.runs[name] = out
        return out

    def train_interrupted(self, name: str, *args: str) -> Path:
        """The same run, SIGTERMed mid-epoch 1 (after its 5th step) and resumed with --resume."""
        out = self.work / name
        command = [sys.executable, "-m", "cg_train", str(self.demo), "--output-dir", str(out), *DEMO_ARGS, *args]
        proc = subprocess.Popen(command, cwd=REPO, env=self.env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 600
        while not steps_logged(out / "train.csv", epoch=1, at_least=5):
            if proc.poll() is not None:
                raise Failed(f"{name}: the run ended before it could be interrupted: {last_line(proc.stderr.read())}")
            if time.time() > deadline:
                proc.kill()
                raise Failed(f"{name}: no step of epoch 1 within 10 minutes")
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=300)
        if "--resume" not in stderr:
            raise Failed(f"{name}: SIGTERM did not end in a checkpoint: {last_line(stderr)}")
        self.cg_train(*command[3:], "--resume")
        return out


def last_line(text: str) -> str:
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def steps_logged(path: Path, epoch: int, at_least: int) -> bool:
    if not path.exists():
        return False
    lines = path.read_text().splitlines()[1:]
    return sum(1 for line in lines if line.split(",")[0] == str(epoch)) >= at_least


def compare_runs(a: Path, b: Path) -> str:
    """A resumed run against an uninterrupted one: same rows, losses and accuracies within the tolerances."""
    import numpy as np
    import pandas as pd

    worst = 0.0
    for name in ("train", "pristine", "corrupt", "train_sample", "test"):
        if not (a / f"{name}.csv").exists():
            continue
        one, two = pd.read_csv(a / f"{name}.csv"), pd.read_csv(b / f"{name}.csv")
        keys = [c for c in ("epoch", "step", "count") if c in one]
        if not one[keys].equals(two[keys]):
            raise Failed(f"{name}.csv: the resumed run has other rows than the uninterrupted one")
        rel = np.abs(one.loss - two.loss) / np.maximum(np.abs(one.loss), 1e-6)
        worst = max(worst, float(rel.max()))
        if rel.max() > RESUME_LOSS_RTOL:
            raise Failed(f"{name}.csv: loss differs by {rel.max():.3g} (relative) > {RESUME_LOSS_RTOL}")
        if "acc1" in one and (np.abs(one.acc1 - two.acc1) > RESUME_ACC_POINTS).any():
            raise Failed(f"{name}.csv: acc1 differs by more than {RESUME_ACC_POINTS} points")
    return f"resumed = uninterrupted, largest relative loss difference {worst:.2e}"


# ---------------------------------------------------------------------- items
@item("dali-decode")
def dali_decode(ctx: Context) -> str:
    """DALI's mixed (nvJPEG) decode against its CPU (libjpeg-turbo) decode on the same files."""
    ctx.needs_dali()
    import numpy as np
    import torch

    from cg_train.data.loaders import LOADERS, LoaderSpec
    from cg_train.data.readers import DATASETS
    from cg_train.data.transforms import IMAGENET_STD

    val = DATASETS.get("imagefolder")(str(ctx.photos), "val")
    images = {}
    for device in ("cpu", "cuda"):
        spec = LoaderSpec(manifest=val, indices=np.arange(len(val), dtype=np.int64), train=False, batch_size=64,
                          resize_size=256, crop_size=224, random_augmentations=False, workers=4, seed=0, rank=0,
                          world_size=1, device=torch.device(device))
        loader = LOADERS.get("dali")(spec)
        loader.set_epoch(0)
        images[device] = torch.cat([batch.images.float().cpu() for batch in loader])
    levels = (images["cuda"] - images["cpu"]).abs() * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
    mean, p99 = levels.mean().item(), torch.quantile(levels.flatten()[::97], 0.99).item()
    detail = f"{len(levels)} images, mean {mean:.3f} levels, p99 {p99:.2f} levels, max {levels.max().item():.1f}"
    if mean > DECODE_MEAN_LEVELS or p99 > DECODE_P99_LEVELS:
        raise Failed(f"{detail}; allowed mean <= {DECODE_MEAN_LEVELS}, p99 <= {DECODE_P99_LEVELS}")
    return detail


def train_and_resume(loader: str, precision: str) -> Callable[[Context], str]:
    def check(ctx: Context) -> str:
        (ctx.needs_dali if loader == "dali" else ctx.needs_cg_train)()
        args = ["--loader", loader, "--mixed-precision", precision, "--no-cudnn-benchmark"]
        plain = ctx.train(f"{loader}-{precision}", *args)
        resumed = ctx.train_interrupted(f"{loader}-{precision}-resumed", *args)
        return compare_runs(plain, resumed)
    return check


for _loader in ("torchvision", "dali"):
    for _precision in ("bf16", "fp16"):
        item(f"train-{_loader}-{_precision}")(train_and_resume(_loader, _precision))


@item("channels-last-compile")
def channels_last_compile(ctx: Context) -> str:
    ctx.needs_cg_train()
    import pandas as pd

    eager = ctx.runs.get("torchvision-bf16") or ctx.train("torchvision-bf16", "--mixed-precision", "bf16",
                                                          "--no-cudnn-benchmark")
    fast = ctx.work / "channels-last-compile"
    result = ctx.cg_train(str(ctx.demo), "--output-dir", str(fast), *DEMO_ARGS, "--mixed-precision", "bf16",
                          "--channels-last", "--compile")
    if "does not work on this machine" in result.stderr:
        raise Failed("torch.compile fell back to eager: " + last_line(
            [line for line in result.stderr.splitlines() if "--compile" in line][0]))
    a, b = pd.read_csv(eager / "test.csv"), pd.read_csv(fast / "test.csv")
    gap = abs(a.acc1.iloc[-1] - b.acc1.iloc[-1])
    if gap > 2.0:
        raise Failed(f"test acc1 {b.acc1.iloc[-1]:.2f} vs eager {a.acc1.iloc[-1]:.2f}: more than 2 points apart")
    return f"compiled + channels_last test acc1 {b.acc1.iloc[-1]:.2f} vs eager {a.acc1.iloc[-1]:.2f}"


@item("paths-cuda")
def paths_cuda(ctx: Context) -> str:
    """The path recorder's device-side statistics and their copy to the writer thread."""
    ctx.needs_cg_train()
    import numpy as np
    import pyarrow.dataset as ds

    out = ctx.train("paths", "--mixed-precision", "bf16", "--paths")
    table = ds.dataset(str(out / "paths"), format="parquet", partitioning="hive").to_table().to_pandas()
    expected = 2 * len(list((ctx.demo / "train").rglob("*.*")))
    if len(table) != expected:
        raise Failed(f"{len(table)} path rows, expected {expected} (every sample, every epoch)")
    if not np.isfinite(table["loss"]).all():
        raise Failed("non-finite losses in the path log")
    # CutMix on the device: the mixed rows' extra columns travel through the same pinned copies
    mixed = ctx.train("paths-mixed", "--mixed-precision", "bf16", "--paths", "--da", "cutmix")
    rows = ds.dataset(str(mixed / "paths"), format="parquet", partitioning="hive").to_table().to_pandas()
    if len(rows) != expected or not {"mix_partner", "partner_label", "mix_weight", "p_partner"} <= set(rows.columns):
        raise Failed(f"--da cutmix: {len(rows)} rows with columns {list(rows.columns)[:14]}, expected {expected} "
                     f"rows naming both sources")
    if not (rows.mix_weight.between(0, 1) & np.isfinite(rows.p_partner) & (rows.mix_partner >= -1)).all():
        raise Failed("--da cutmix: a mixed row's weight, partner or partner probability is out of range")
    return f"{len(table)} rows, every sample once per epoch; --da cutmix: {len(rows)} rows naming both sources"


@item("deepspeed-zero2")
def deepspeed_zero2(ctx: Context) -> str:
    ctx.needs_cg_train()
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        raise Skip("DeepSpeed is not installed (pip install -e '.[deepspeed]')") from None
    out = ctx.train("zero2", "--mixed-precision", "bf16", "--deepspeed", str(REPO / "launch/deepspeed/zero2.json"))
    log = (out / "log.txt").read_text()
    if "ZeRO stage 2" not in log:
        raise Failed("the run did not report ZeRO stage 2")
    return "trained 2 epochs through DeepSpeed ZeRO-2"


SYNC_PROBE = r"""
import sys, torch
from cg_train.cli import main
from cg_train.data.manifest import Batch
from cg_train.engine.trainer import Trainer
step, to = Trainer.train_step, Batch.to
def checked(function):
    def run(*args, **kwargs):
        torch.cuda.set_sync_debug_mode("error")
        try:
            return function(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return run
Trainer.train_step, Batch.to = checked(step), checked(to)
sys.exit(main(sys.argv[1:]))
"""


@item("sync-debug")
def sync_debug(ctx: Context) -> str:
    """Each training step (batch copy, forward, backward, optimizer) under torch's sync debug mode "error":
    any host-device synchronisation inside a step raises. The trainer's deliberate reads (the stop flag
    every few steps, the logged loss every --print-freq steps) sit outside the step."""
    ctx.needs_cg_train()
    results = []
    for precision, extra in (("bf16", []), ("fp16", ["--fused-optimizer"])):
        out = ctx.work / f"sync-{precision}"
        args = [str(ctx.demo), "--output-dir", str(out), *DEMO_ARGS, "--epochs", "1", "--print-freq", "10",
                "--mixed-precision", precision, *extra]
        result = subprocess.run([sys.executable, "-c", SYNC_PROBE, *args], cwd=REPO, env=ctx.env(),
                                capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            where = [line for line in result.stderr.splitlines() if "File \"" in line and "cg_train" in line]
            raise Failed(f"{precision}: a step synchronised: {last_line(result.stderr)} at "
                         f"{where[-1].strip() if where else '?'}")
        results.append(f"{precision}{' + fused SGD' if extra else ''}")
    return "no host sync inside a step (" + ", ".join(results) + ")"


@item("dali-memory")
def dali_memory(ctx: Context) -> str:
    """GPU memory that DALI's pipelines hold for a ResNet-50-shaped run (batch 256, 224 px): the 5 loaders of
    a run sharing one pipeline vs one pipeline each (before this change)."""
    ctx.needs_dali()
    script = r"""
import json, sys, numpy as np, torch
from cg_train.data.loaders import LOADERS, LoaderSpec
from cg_train.data.readers import DATASETS
train = DATASETS.get("imagefolder")(sys.argv[1], "train")
share = sys.argv[2] == "shared"
shared = {}
torch.cuda.init(); torch.zeros(1, device="cuda")
free0 = torch.cuda.mem_get_info()[0]
loaders = []  # all kept alive, as a run keeps its loaders
for phase in range(5):
    spec = LoaderSpec(manifest=train, indices=np.arange(len(train), dtype=np.int64), train=phase == 0,
                      batch_size=256, resize_size=256, crop_size=224, random_augmentations=phase == 0, workers=4,
                      seed=0, rank=0, world_size=1, device=torch.device("cuda"), shared=shared if share else {})
    loader = LOADERS.get("dali")(spec)
    loader.set_epoch(0)
    for batch in loader:
        del batch
    loaders.append(loader)
torch.cuda.synchronize()
used = free0 - torch.cuda.mem_get_info()[0] - torch.cuda.memory_reserved()
print(json.dumps({"mib": used / 2**20}))
"""
    mib = {}
    for mode in ("shared", "separate"):
        result = subprocess.run([sys.executable, "-c", script, str(ctx.photos), mode], cwd=REPO, env=ctx.env(),
                                capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise Failed(f"{mode}: {last_line(result.stderr)}")
        mib[mode] = json.loads(result.stdout.strip().splitlines()[-1])["mib"]
    detail = f"DALI holds {mib['shared']:.0f} MiB for 5 loaders sharing one pipeline, {mib['separate']:.0f} MiB " \
             f"with one pipeline per loader"
    if mib["shared"] > mib["separate"] * 1.05:
        raise Failed(detail)
    return detail


@item("step-overhead")
def step_overhead(ctx: Context) -> str:
    """benchmarks/step_overhead.py in issue 24's setting (resnet18 at 32 px on the demo digits, batch 64,
    2 workers) on the GPU, where the step is no longer compute-bound and the loader decides; 3 rounds
    (1 with --quick); rows go to BENCHMARKS.md."""
    ctx.needs_cg_train()
    import torch

    try:
        import nvidia.dali  # noqa: F401
        modes = "plain,compute,torchvision+paths,dali+paths"
    except ImportError:
        modes = "plain,compute,torchvision+paths"
    summary = ctx.benchmark("step_overhead.py", "step-overhead", [
        "--device", "cuda", "--data", str(ctx.demo), "--rounds", "1" if ctx.quick else "3", "--modes", modes,
        "--machine", f"{torch.cuda.get_device_name()}, {os.cpu_count()} CPUs"])["summary"]
    ratios = ", ".join(f"{mode} {statistics.median(values):.2f}x" for mode, values in summary["vs_plain"].items())
    targets = ", ".join(f"{name}: {'met' if met else 'NOT met'}" for name, met in summary["targets"].items())
    return f"vs the plain loop (median): {ratios}; {targets}"


@item("throughput")
def throughput(ctx: Context) -> str:
    """benchmarks/throughput.py for ResNet-18 and ResNet-50 on photo-like JPEGs; rows go to BENCHMARKS.md."""
    ctx.needs_cg_train()
    import torch

    try:
        import nvidia.dali  # noqa: F401
        loader = "dali"
    except ImportError:
        loader = "torchvision"
    name = torch.cuda.get_device_name()
    summaries = []
    for arch, extra in (("resnet18", []), ("resnet50", ["--no-paths"])):
        data = ctx.benchmark("throughput.py", f"throughput-{arch}", [
            "--arch", arch, "--loader", loader, "--device", "cuda", "--data", str(ctx.photos), "--image-size", "224",
            "--batch-size", "256", "--workers", str(min(16, os.cpu_count() or 1)), "--epochs", "2",
            "--machine", f"{name}, {os.cpu_count()} CPUs", *extra],
            passthrough=["--mixed-precision", "bf16", "--channels-last"], what=f"{arch}: ")
        rates = ", ".join(f"{row['mode']} {row['img_s']:.0f}" for row in data["rows"])
        ratios = ", ".join(f"{k} {v:.3f}" for k, v in data["summary"].items())
        summaries.append(f"{arch} ({loader}): {rates} img/s; {ratios}")
    return "; ".join(summaries)


# ---------------------------------------------------------------------- main
def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="print the items and exit")
    parser.add_argument("--only", default=None, help="comma-separated items to run (default: all)")
    parser.add_argument("--skip", default="", help="comma-separated items to leave out")
    parser.add_argument("--work", default=None, help="folder for data and runs (default: a temporary one)")
    parser.add_argument("--benchmarks", default=str(REPO / "BENCHMARKS.md"),
                        help="append throughput rows here ('' for nowhere)")
    parser.add_argument("--quick", action="store_true", help="512 photos instead of 2,560 (throughput is noisier)")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(ITEMS))
        return 0
    chosen = args.only.split(",") if args.only else list(ITEMS)
    for name in chosen + [s for s in args.skip.split(",") if s]:
        if name not in ITEMS:
            parser.error(f"unknown item {name!r}; items: {', '.join(ITEMS)}")
    chosen = [name for name in chosen if name not in args.skip.split(",")]
    with tempfile.TemporaryDirectory(prefix="cg-train-gpu-check-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        ctx = Context(work, Path(args.benchmarks) if args.benchmarks else None, args.quick)
        failed = 0
        for name in chosen:
            started = time.perf_counter()
            try:
                detail = ITEMS[name](ctx)
                print(f"PASS: {name} ({detail}) [{time.perf_counter() - started:.0f} s]", flush=True)
            except Skip as reason:
                print(f"SKIP: {name}: {reason}", flush=True)
            except Failed as problem:
                failed += 1
                print(f"FAIL: {name} ({problem}) [{time.perf_counter() - started:.0f} s]", flush=True)
            except Exception as exc:  # a crash in one item must not hide the others
                failed += 1
                print(f"FAIL: {name} ({type(exc).__name__}: {exc})", flush=True)
                traceback.print_exc(file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

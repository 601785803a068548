"""Size (and build / load time) of ``cg-analyze explore``'s page at ImageNet-like scale.

Builds a synthetic run in the layout cg-train writes (no training): ``--samples`` photo-like JPEGs (random 224 px
crops, flips and colour shifts of scikit-learn's two sample photographs) in an ImageFolder of ``--classes`` classes,
``corruption.parquet`` with 20% symmetric noise, and ``--epochs`` epochs of ``paths/`` parts (top-5, 1,000-class
label types) whose p(observed) follow a learning curve (corrupt samples late, when at all). Then runs the real
``cg-analyze noise`` (every detector) and ``cg-analyze explore`` with N samples on the page, prints the page's size
and what it is made of, and, when Debian's chromium is installed, the time headless Chromium takes to show it.

    python benchmarks/explorer_size.py                       # 6,000 samples, 90 epochs, N = 5,000 (top 4,000 + 1,000)
    python benchmarks/explorer_size.py --top 3000 --random 1000 --thumb-format jpeg
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cg_train.paths.layout import WRITE_OPTIONS, part_dir, part_name, path_schema


def write_images(root: Path, n: int, classes: int, rng: np.random.Generator) -> list[str]:
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = [np.asarray(p) for p in load_sample_images().images]  # china.jpg, flower.jpg: 427 x 640
    paths = []
    for i in range(n):
        k = i % classes
        photo = photos[rng.integers(len(photos))]
        y, x = rng.integers(photo.shape[0] - 224), rng.integers(photo.shape[1] - 224)
        crop = photo[y:y + 224, x:x + 224].astype(np.float32) * rng.uniform(0.7, 1.3, size=3)
        crop = np.clip(crop[:, ::-1] if rng.random() < 0.5 else crop, 0, 255).astype(np.uint8)
        folder = root / "train" / f"n{k:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img_{i:07d}.JPEG"
        Image.fromarray(crop).save(path, quality=90)
        paths.append(str(path))
    return paths


def write_run(run: Path, paths: list[str], classes: int, epochs: int, rng: np.random.Generator) -> None:
    n = len(paths)
    true = np.arange(n) % classes
    corrupt = rng.random(n) < 0.2
    observed = np.where(corrupt, (true + rng.integers(1, classes, n)) % classes, true)
    pd.DataFrame({"index": np.arange(n), "path": paths, "true_label": true, "observed_label": observed,
                  "is_corrupt": corrupt, "resampled": corrupt, "removed": np.zeros(n, bool),
                  "in_pristine": ~corrupt, "in_corrupt": corrupt, "in_train_sample": np.ones(n, bool)}
                 ).to_parquet(run / "corruption.parquet", index=False)
    schema = path_schema(1000, 5)
    onset = np.where(corrupt, rng.uniform(0.5, 1.5, n), rng.uniform(0.05, 0.4, n))  # when the given label is learnt
    for epoch in range(epochs):
        progress = epoch / max(epochs - 1, 1)
        p_obs = (1 / (1 + np.exp(-12 * (progress - onset))) * rng.uniform(0.8, 1.0, n)).astype(np.float32)
        p_true = np.where(corrupt, (1 - p_obs) * rng.uniform(0.3, 0.9, n), p_obs).astype(np.float32)
        others = rng.integers(0, classes, (n, 5))
        others[:, 0] = np.where(p_obs >= p_true, observed, true)
        probs = np.sort(rng.dirichlet(np.ones(5), n).astype(np.float32), axis=1)[:, ::-1] * 0.3
        probs[:, 0] = np.maximum(p_obs, p_true)
        order = rng.permutation(n)
        columns = {"step": (np.arange(n) // 256).astype(np.int32), "index": order.astype(np.int32),
                   "observed_label": observed[order].astype(np.int16), "true_label": true[order].astype(np.int16),
                   "loss": -np.log(np.maximum(p_obs[order], 1e-6)), "p_observed": p_obs[order],
                   "p_true": p_true[order], "margin": np.log(p_obs[order] / (1 - p_obs[order] + 1e-6) + 1e-6),
                   "correct": others[order, 0] == observed[order]}
        for i in range(5):
            columns[f"top{i + 1}_class"] = others[order, i].astype(np.int16)
            columns[f"top{i + 1}_prob"] = probs[order, i].astype(np.float16)
        folder = part_dir(run / "paths", epoch, 0)
        folder.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_arrays([pa.array(columns[f.name]).cast(f.type) for f in schema], schema=schema)
        pq.write_table(table, folder / part_name(0), **WRITE_OPTIONS)


def page_parts(page: Path) -> dict[str, float]:
    """MB of the page by part: thumbnails, learning paths, top-k, everything else."""
    data = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>',
                                page.read_text(), re.S).group(1))
    thumbs = sum(len(t) for t in data["rows"]["thumb"])
    series = len(data["series"])
    topk = len(data["topk_classes"]) + len(data["topk_probs"])
    total = page.stat().st_size
    return {"total": total / 1e6, "thumbnails": thumbs / 1e6, "learning paths": series / 1e6, "top-k": topk / 1e6,
            "rest (table, script, styles)": (total - thumbs - series - topk) / 1e6}


def load_seconds(page: Path) -> float | None:
    """Seconds from navigation start until the first page of rows is rendered, in headless Chromium."""
    if not Path("/usr/bin/chromium").exists():
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    with tempfile.TemporaryDirectory() as profile:
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={profile}"):
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            driver.get(page.as_uri())  # returns after the load event: the inline script has rendered
            return driver.execute_script("return performance.now()") / 1000
        finally:
            driver.quit()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=6000)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--epochs", type=int, default=90)
    p.add_argument("--top", type=int, default=4000)
    p.add_argument("--random", type=int, default=1000)
    p.add_argument("--thumb-format", default="webp")
    p.add_argument("--dir", type=Path, help="keep the synthetic run here (default: a temporary folder)")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.dir or Path(tmp)
        run = root / "run"
        if not (run / "corruption.parquet").exists():  # --dir: made once, kept
            run.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            write_run(run, write_images(root / "data", args.samples, args.classes, rng), args.classes, args.epochs, rng)
            print(f"synthetic run: {args.samples} samples, {args.epochs} epochs ({time.perf_counter() - started:.0f} s)")
        cli = [sys.executable, "-c", "import sys; from analysis.cli import main; sys.exit(main(sys.argv[1:]))"]
        started = time.perf_counter()
        subprocess.run([*cli, "noise", str(run), "--detectors", "aum,confident_learning,forgetting,lstm,mean_loss"],
                       check=True, stdout=subprocess.DEVNULL)
        print(f"cg-analyze noise: {time.perf_counter() - started:.0f} s")
        for fmt in dict.fromkeys([args.thumb_format, "jpeg"]):
            out = root / f"page-{fmt}"
            started = time.perf_counter()
            subprocess.run([*cli, "explore", str(run), "-o", str(out), "--top", str(args.top), "--random",
                            str(args.random), "--thumb-format", fmt], check=True)
            built = time.perf_counter() - started
            parts = page_parts(out / "explorer.html")
            shown = load_seconds(out / "explorer.html")
            print(f"N = {args.top + args.random} ({args.top} top + {args.random} random), {args.epochs} epochs, 40 px "
                  f"{fmt} thumbnails: {parts['total']:.2f} MB, built in {built:.0f} s"
                  + (f", shown by headless Chromium in {shown:.1f} s" if shown is not None else ""))
            for name, mb in parts.items():
                if name != "total":
                    print(f"    {name:30s} {mb:6.2f} MB")


if __name__ == "__main__":
    main()

"""``cg-analyze explore RUN_DIR -o DIR``: one self-contained HTML page to look at a run's training samples.

FiftyOne's mistakenness view and Cleanlab Studio show suspicious samples behind a server or an account; this is
one file that opens from disk, with no server and no network: the data, the thumbnails (small JPEG/WebP,
base64), the script and the styles are all inside it (``analysis/explorer_assets/``, written for this page).

One row per sample: thumbnail, index, path, given / predicted / true label, every detector's score from
``noise/scores.parquet`` (scored here when it is missing), and a sparkline of the learning path (p(given),
p(true) over epochs) from ``paths/`` or ``paths_eval/``. Rows sort by any column and filter by class, by
given != predicted, by corrupt / clean; a click shows the path plot and the top-k predictions per epoch.
Marked samples export as ``exclude.txt`` (one index per line: ``cg-train --exclude``) and as a label table
(``labels.csv`` and ``labels.parquet``, columns ``index, old_label, new_label, source, score``: ``--labels``).

At ImageNet scale the page holds the ``--top N`` samples by ``--by DETECTOR`` plus ``--random M`` of the rest
(seeded), and the top-k predictions of at most ``--topk-epochs`` epochs; "predicted" is the top-1 class of the
last epoch logged.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from cg_train.errors import CgTrainError
from cg_train.io import atomic_write_text

from .commands import COMMANDS
from .common import run_parsed

ASSETS = Path(__file__).with_name("explorer_assets")
PAGE = "explorer.html"
FLAGGED = "confident_learning_flagged"
#: uint16 code of a missing probability (sample not logged in that epoch, or true label unknown)
MISSING = 65535


@dataclass
class PagePaths:
    """The learning paths of the page's samples, read from one path log."""

    source: str
    epochs: list[int]  # 1-based epoch numbers (training epoch e -> e + 1; eval after E epochs -> E)
    p_given: np.ndarray  # float32 [n, T], NaN where not logged
    p_true: np.ndarray  # float32 [n, T]
    predicted: np.ndarray  # int64 [n]: top-1 class at the last epoch the sample was logged (-1: never)
    topk_epochs: list[int]  # positions into ``epochs`` whose top-k predictions the page holds
    topk_classes: np.ndarray  # int64 [n, E, k] (-1: not logged)
    topk_probs: np.ndarray  # float32 [n, E, k]
    num_classes: int


def detector_columns(scores: pd.DataFrame) -> list[str]:
    from .noise_report import ID_COLUMNS  # (the detectors import torch: only when a page is written)

    return [c for c in scores.columns if c not in ID_COLUMNS and c != FLAGGED]


def read_scores(run_dir: Path, scores_file: Optional[Path], source: str, out: Path) -> tuple[pd.DataFrame, str]:
    """``scores.parquet`` of ``cg-analyze noise``; scored here (all detectors, saved beside the page) if missing."""
    path = scores_file or run_dir / "noise" / "scores.parquet"
    if path.is_file():
        return pd.read_parquet(path), str(path)
    if scores_file is not None:
        raise CgTrainError(f"--scores {scores_file} does not exist: write it with `cg-analyze noise RUN_DIR`")
    from .detectors import load_dynamics, usable_detectors
    from .noise_report import score_run

    dyn = load_dynamics(run_dir, source)
    table = score_run(dyn, usable_detectors(dyn))
    out.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out / "scores.parquet", index=False)
    print(f"cg-analyze explore: {path} is missing: scored every sample with every detector into "
          f"{out / 'scores.parquet'} (`cg-analyze noise {run_dir}` also writes the report)")
    return table, str(out / "scores.parquet")


def default_by(run_dir: Path, names: Sequence[str]) -> str:
    """The detector with the best AUROC in ``noise/detectors.csv`` (as the noise report's grid), else aum."""
    metrics = run_dir / "noise" / "detectors.csv"
    if metrics.is_file():
        table = pd.read_csv(metrics)
        table = table[table.detector.isin(names)]
        if len(table):
            return str(table.sort_values("auroc").detector.iloc[-1])
    return "aum" if "aum" in names else names[0]


def choose_rows(scores: pd.DataFrame, by: str, top: int, extra: int, seed: int,
                removed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions into ``scores``, is-in-the-top-N flags): the ``top`` highest ``by`` scores (ties: lower index
    first), then ``extra`` of the other trained samples drawn at random with ``seed``, in index order."""
    trained = np.flatnonzero(~removed)
    values = scores[by].to_numpy(np.float64)[trained]
    order = trained[np.lexsort((scores["index"].to_numpy()[trained], -np.nan_to_num(values, nan=-np.inf)))]
    head, rest = order[:top], order[top:]
    pick = np.random.default_rng(seed).choice(len(rest), size=min(extra, len(rest)), replace=False)
    tail = np.sort(rest[pick])
    return np.concatenate([head, tail]), np.concatenate([np.ones(len(head), bool), np.zeros(len(tail), bool)])


def spaced(count: int, most: int) -> list[int]:
    """At most ``most`` positions out of ``count``, evenly spaced, first and last included."""
    if count <= most:
        return list(range(count))
    return sorted(set(np.linspace(0, count - 1, most).round().astype(int).tolist()))


def read_page_paths(run_dir: Path, source: str, indices: np.ndarray, n_total: int, k_most: int,
                    topk_epochs: int) -> PagePaths:
    """One streamed pass over the path log, keeping the rows of ``indices`` only (memory: page x epochs)."""
    from cg_train.paths.merge import read_epochs

    from .detectors.dynamics import path_log

    log = path_log(run_dir, source)
    source, root, parts, num_classes, k = log.source, log.root, log.parts, log.num_classes, min(log.k, k_most)
    epochs = sorted({p.epoch for p in parts})
    keep = spaced(len(epochs), topk_epochs)
    slot = {t: j for j, t in enumerate(keep)}
    n, t_count = len(indices), len(epochs)
    position = np.full(n_total, -1, np.int64)
    position[indices] = np.arange(n)
    p_given = np.full((n, t_count), np.nan, np.float32)
    p_true = np.full((n, t_count), np.nan, np.float32)
    predicted = np.full(n, -1, np.int64)
    classes = np.full((n, len(keep), k), -1, np.int64)
    probs = np.full((n, len(keep), k), np.nan, np.float32)
    columns = ["index", "p_observed", "p_true"] + [f"top{i}_{c}" for i in range(1, k + 1) for c in ("class", "prob")]
    for t, (_, table) in enumerate(read_epochs(parts, columns)):
        index = table.column("index").to_numpy().astype(np.int64)
        if index.max(initial=-1) >= n_total:
            raise CgTrainError(f"{root} logs sample {index.max()} but the scores have {n_total}: another run's log")
        rows = position[index]
        mine = rows >= 0
        rows = rows[mine]

        def get(name: str) -> np.ndarray:
            return table.column(name).to_numpy()[mine]

        p_given[rows, t] = get("p_observed")
        p_true[rows, t] = get("p_true")
        predicted[rows] = get("top1_class")
        if t in slot:
            for i in range(1, k + 1):
                classes[rows, slot[t], i - 1] = get(f"top{i}_class")
                probs[rows, slot[t], i - 1] = get(f"top{i}_prob")
    labels = [e + 1 if source == "train" else e for e in epochs]
    return PagePaths(source, labels, p_given, p_true, predicted, keep, classes, probs, num_classes)


def thumbnail(path: str, size: int, fmt: str, quality: int) -> str:
    """A data URI of the image at ``path`` shrunk to fit ``size`` px ("" when it is not a readable file)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.draft("RGB" if img.mode not in ("L", "1") else "L", (2 * size, 2 * size))  # JPEG: decode at 1/2-1/8
            img = img.convert("L" if img.mode in ("L", "1", "I;16") else "RGB")
            img.thumbnail((size, size), Image.Resampling.BICUBIC, reducing_gap=2.0)
            buffer = io.BytesIO()
            img.save(buffer, format=fmt.upper(), quality=quality, **({"method": 4} if fmt == "webp" else {}))
    except (OSError, ValueError):
        return ""
    return f"data:image/{fmt};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def thumbnails(paths: Sequence[str], size: int, fmt: str, quality: int) -> list[str]:
    """Decoded on threads (PIL releases the GIL while decoding)."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda p: thumbnail(p, size, fmt, quality), paths, chunksize=64))


def class_names(record: pd.DataFrame, num_classes: int) -> list[str]:
    """An ImageFolder's class folder names (the parent folder of a sample labelled k), else the class ids."""
    names = [str(k) for k in range(num_classes)]
    label = np.where(record["true_label"].to_numpy() >= 0, record["true_label"].to_numpy(),
                     record["observed_label"].to_numpy())
    first = pd.Series(np.arange(len(record))).groupby(label).first()
    for k, i in first.items():
        path = Path(str(record["path"].iloc[i]))
        if 0 <= k < num_classes and path.parent.name and path.suffix:
            names[int(k)] = path.parent.name
    return names


def encode_u16(values: np.ndarray) -> str:
    """Probabilities in [0, 1] (NaN: MISSING) or class ids as little-endian uint16, base64."""
    return base64.b64encode(np.ascontiguousarray(values, dtype="<u2").tobytes()).decode("ascii")


def quantize(p: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(p), np.round(np.clip(p, 0.0, 1.0) * (MISSING - 1)), MISSING).astype(np.uint16)


def rounded(values: np.ndarray) -> list[Optional[float]]:
    return [float(f"{v:.6g}") if np.isfinite(v) else None for v in values.astype(np.float64)]


def build_payload(args: argparse.Namespace) -> tuple[dict, dict]:
    """The page's data (everything the script shows) and a summary of what went in."""
    run = Path(args.run_dir)
    out = Path(args.output or run / "explore")
    scores, scores_path = read_scores(run, args.scores, args.source, out)
    names = detector_columns(scores)
    if not names:
        raise CgTrainError(f"{scores_path} has no detector score columns: write it with `cg-analyze noise RUN_DIR`")
    by = args.by or default_by(run, names)
    if by not in names:
        raise CgTrainError(f"--by {by}: {scores_path} has no such score; choose one of {', '.join(names)}")
    from cg_train.paths.export_td import read_labels

    record = read_labels(run, columns=None)
    if len(record) != len(scores) or not (record["index"].to_numpy() == scores["index"].to_numpy()).all():
        raise CgTrainError(f"{scores_path} scores {len(scores)} samples but {run}/corruption.parquet has "
                           f"{len(record)}: score this run (`cg-analyze noise {run}`)")
    removed = record["removed"].to_numpy(bool) if "removed" in record else np.zeros(len(record), bool)
    rows, in_top = choose_rows(scores, by, args.top, args.random, args.seed, removed)
    if not len(rows):
        raise CgTrainError("the page would hold no sample: raise --top or --random")
    indices = scores["index"].to_numpy(np.int64)[rows]
    paths = read_page_paths(run, args.source, indices, len(scores), args.topk, args.topk_epochs)
    sample_paths = record["path"].astype(str).to_numpy()[rows]
    thumbs = thumbnails(sample_paths, args.thumb_size, args.thumb_format, args.thumb_quality) \
        if args.thumb_size else [""] * len(rows)
    true = record["true_label"].to_numpy(np.int64)[rows]
    given = record["observed_label"].to_numpy(np.int64)[rows]
    payload = {
        "run": str(run.resolve()), "source": paths.source, "by": by, "detectors": names,
        "scores_file": scores_path, "n_run": int(len(scores)), "n_trained": int((~removed).sum()),
        "n_top": int(in_top.sum()), "n_random": int((~in_top).sum()), "seed": args.seed,
        "classes": class_names(record, paths.num_classes), "epochs": paths.epochs,
        "topk_epochs": [paths.epochs[t] for t in paths.topk_epochs], "k": int(paths.topk_classes.shape[2]),
        "rows": {
            "index": indices.tolist(), "path": sample_paths.tolist(), "given": given.tolist(),
            "pred": paths.predicted.tolist(), "true": true.tolist(), "top": in_top.astype(int).tolist(),
            "corrupt": ((true >= 0) & (true != given)).astype(int).tolist(),
            "flagged": scores[FLAGGED].to_numpy(int)[rows].tolist() if FLAGGED in scores else None,
            "scores": {name: rounded(scores[name].to_numpy()[rows]) for name in names},
            "thumb": thumbs,
        },
        # [n, T, 2]: p(given), p(true); [n, E, k]: top-k classes and probabilities
        "series": encode_u16(np.stack([quantize(paths.p_given), quantize(paths.p_true)], axis=2)),
        "topk_classes": encode_u16(np.where(paths.topk_classes >= 0, paths.topk_classes, MISSING)),
        "topk_probs": encode_u16(quantize(paths.topk_probs)),
    }
    return payload, {"out": out, "by": by, "rows": len(rows), "thumbs": sum(bool(t) for t in thumbs)}


def render(payload: dict, title: str) -> str:
    """The HTML page: the template with the styles, the script and the data inlined."""
    page = (ASSETS / "explorer.html").read_text()
    css, js = (ASSETS / "explorer.css").read_text(), (ASSETS / "explorer.js").read_text()
    data = json.dumps(payload, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    head, tail = page.split("%%DATA%%")
    head = head.replace("%%TITLE%%", title.replace("&", "&amp;").replace("<", "&lt;")).replace("%%CSS%%", css)
    return head + data + tail.replace("%%JS%%", js)


def explore(args: argparse.Namespace) -> list[Path]:
    payload, summary = build_payload(args)
    out: Path = summary["out"]
    out.mkdir(parents=True, exist_ok=True)
    path = out / PAGE
    atomic_write_text(path, render(payload, f"cg-train explorer: {Path(args.run_dir).name}"))
    print(f"cg-analyze explore: {summary['rows']} samples ({payload['n_top']} highest by {summary['by']} + "
          f"{payload['n_random']} random of the rest; {summary['thumbs']} thumbnails), "
          f"{path.stat().st_size / 1e6:.2f} MB")
    return [path]


def whole(lowest: int, highest: Optional[int] = None):
    """argparse type: a whole number in [lowest, highest]."""
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = lowest - 1
        if number < lowest or highest is not None and number > highest:
            raise argparse.ArgumentTypeError(f"{value!r} is not a whole number "
                                             + (f"from {lowest} to {highest}" if highest else f">= {lowest}"))
        return number
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cg-analyze explore", description="Write one self-contained HTML page "
                                "(no server, no network) to browse a run's training samples: thumbnails, labels, "
                                "every detector's score, learning paths; sort, filter, mark and export the marked "
                                "samples for cg-train --exclude / --labels.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a cg-train --output-dir trained with --paths and/or "
                   "--paths-eval (scored by `cg-analyze noise`, or scored here)")
    p.add_argument("-o", "--output", metavar="DIR", help="where to write explorer.html (default: RUN_DIR/explore)")
    p.add_argument("--by", metavar="DETECTOR", help="rank by this score column of scores.parquet (default: the "
                   "best AUROC in noise/detectors.csv, else aum)")
    p.add_argument("--top", type=whole(0), default=3000, metavar="N", help="the N highest-scored samples go "
                   "on the page (default: 3000)")
    p.add_argument("--random", type=whole(0), default=1000, metavar="M", help="plus M of the other samples "
                   "drawn at random (default: 1000)")
    p.add_argument("--seed", type=whole(0), default=0, help="seed of the random draw (default: 0)")
    p.add_argument("--scores", type=Path, metavar="SCORES.parquet", help="scores of cg-analyze noise (default: "
                   "RUN_DIR/noise/scores.parquet; when missing every detector is run here)")
    p.add_argument("--source", default="auto", choices=("auto", "train", "eval"), help="learning paths from the "
                   "training passes (--paths) or the eval passes (--paths-eval); auto: training passes when logged")
    p.add_argument("--topk", type=whole(1), default=5, metavar="K", help="top-k predictions per epoch in the "
                   "detail view (at most what the run logged; default: 5)")
    p.add_argument("--topk-epochs", type=whole(1), default=20, metavar="E", help="keep the top-k of at most E "
                   "epochs, evenly spaced, first and last included (default: 20)")
    p.add_argument("--thumb-size", type=whole(0), default=40, metavar="PX", help="thumbnail size in pixels "
                   "(default: 40; 0: no thumbnails)")
    p.add_argument("--thumb-format", default="webp", choices=("webp", "jpeg"), help="thumbnail encoding "
                   "(default: webp, about 30%% smaller than jpeg at the same quality)")
    p.add_argument("--thumb-quality", type=whole(1, 100), default=75, metavar="Q", help="thumbnail quality 1-100 "
                   "(default: 75)")
    return p


@COMMANDS.register("explore", help="one self-contained HTML page to browse, sort, filter and mark a run's samples")
def main(argv: Sequence[str]) -> int:
    return run_parsed(build_parser(), argv, explore)

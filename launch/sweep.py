"""Sweep files: a base cg-train config plus axes to vary; every combination of axis values is one point.

    base: ../configs/imagenet_noise_0.5.yaml   # a --config file (relative to this file), an inline
                                               # mapping of sections as in --config files, or a list of both
    axes:                                      # full config keys (`cg-train --help` lists them)
      noise.corrupt_fraction: [0.0, 0.5]
      optim.optimizer: [SGD, RM3]
      train.seed: [0, 1]
    launch:                                    # optional defaults of cg-launch's flags (flags win)
      partition: gpu
      gpus_per_node: 8

Every point is validated with the config schema before anything is submitted. A
point's directory name comes from its axis values only
(``corrupt_fraction=0.5,optimizer=RM3,seed=1``), so re-submitting the same file finds
the same directories; adding an axis renames the points.
"""
from __future__ import annotations

import copy
import difflib
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from cg_train.checks import check_names
from cg_train.config import (TEACHER_SEPARATOR, Config, all_keys, build_config, full_key, nest_keys,
                             split_teachers)
from cg_train.errors import ConfigError

SWEEP_KEYS = ("base", "axes", "launch")
#: Keys cg-launch sets for every point: the point's directory, and resuming whatever is there.
LAUNCHER_KEYS = ("output.dir", "output.resume")
#: Config keys holding a file or folder path, made absolute for jobs that start elsewhere.
PATH_KEYS = ("data.dir", "data.test_dir", "train.deepspeed", "noise.exclude", "noise.scores", "noise.labels",
             "supervision.targets")
#: The name of the only point of a sweep without axes.
SINGLE_POINT = "run"


@dataclass(frozen=True)
class Point:
    name: str  # directory name inside the launch directory ("." = the launch directory itself)
    values: dict[str, Any]  # axis key -> value
    cfg: Config


@dataclass
class Sweep:
    points: list[Point]
    launch: dict[str, Any] = field(default_factory=dict)  # defaults for LaunchOptions


def for_launch(cfg: Config, run_dir: Path) -> Config:
    """A copy that writes to ``run_dir`` and resumes whatever is there (requeue, re-submission); absolute
    paths, since a job may start in another directory."""
    cfg = copy.deepcopy(cfg)
    cfg.output.dir, cfg.output.resume = str(run_dir.absolute()), "auto"
    for key in PATH_KEYS:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value:
            setattr(getattr(cfg, section), name, str(Path(value).expanduser().absolute()))
    if cfg.supervision.teacher:
        cfg.supervision.teacher = TEACHER_SEPARATOR.join(str(Path(p).expanduser().absolute())
                                                         for p in split_teachers(cfg.supervision.teacher))
    return cfg


def point_config(files: list[str], mappings: list[tuple[str, Mapping[str, Any]]], run_dir: Path,
                 source: str) -> Config:
    try:
        return for_launch(check_names(build_config(files, mappings=mappings)), run_dir)
    except ConfigError as exc:
        raise ConfigError(str(exc) if str(exc).startswith(source) else f"{source}: {exc}") from None


def load_sweep(path: str | Path, launch_dir: Path) -> Sweep:
    """Read, check and expand a sweep file; every point's config is validated here."""
    path = Path(path)
    source = path.name
    raw = read_yaml(path)
    unknown = [k for k in raw if k not in SWEEP_KEYS]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), SWEEP_KEYS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{source}: unknown key {unknown[0]!r}{hint}; a sweep file has base:, axes: and launch:")
    files, inline = base_sources(raw.get("base"), path.parent, source)
    axes = parse_axes(raw.get("axes") or {}, source)
    launch = raw.get("launch") or {}
    if not isinstance(launch, dict):
        raise ConfigError(f"{source}: launch: must be a mapping of cg-launch options, e.g. partition: gpu")

    labels = axis_labels(list(axes))
    points: dict[str, Point] = {}
    for combo in itertools.product(*axes.values()):
        values = dict(zip(axes, combo))
        name = ",".join(f"{labels[k]}={format_value(v)}" for k, v in values.items()) or SINGLE_POINT
        if name in points:
            raise ConfigError(f"{source}: two points would share the directory {name!r}: make the axis values "
                              f"differ by more than '/' or spaces")
        where = f"{source} (point {name})"
        cfg = point_config(files, [*inline, (where, nest_keys(values))], launch_dir / name, where)
        points[name] = Point(name, values, cfg)
    return Sweep(list(points.values()), launch)


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"sweep file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path.name} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path.name}: a sweep file is a mapping with base:, axes: and launch:")
    return raw


def base_sources(base: Any, here: Path, source: str) -> tuple[list[str], list[tuple[str, Mapping[str, Any]]]]:
    """``base:`` as (config files, inline mappings); files are relative to the sweep file."""
    items = base if isinstance(base, list) else [] if base is None else [base]
    files: list[str] = []
    inline: list[tuple[str, Mapping[str, Any]]] = []
    for item in items:
        if isinstance(item, str):
            if inline:  # files are merged first: one written after a mapping could not win over it
                raise ConfigError(f"{source}: base: list config files before inline mappings")
            file = Path(item).expanduser()
            files.append(str(file if file.is_absolute() else here / file))
        elif isinstance(item, dict):
            inline.append((f"{source} (base)", item))
        else:
            raise ConfigError(f"{source}: base: must be a config file, a mapping of sections, or a list of them")
    return files, inline


def parse_axes(axes: Any, source: str) -> dict[str, list[Any]]:
    if not isinstance(axes, dict):
        raise ConfigError(f"{source}: axes: must map config keys to lists of values, e.g. train.seed: [0, 1]")
    keys = all_keys()
    parsed: dict[str, list[Any]] = {}
    for raw_key, values in axes.items():
        key = full_key(str(raw_key))
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{source}: unknown config key {raw_key!r} in axes{hint}; `cg-train --help` lists them")
        if key in LAUNCHER_KEYS:
            raise ConfigError(f"{source}: axis {key!r} is set by cg-launch (one directory per point, resumed "
                              f"automatically): remove it")
        if not isinstance(values, list):
            raise ConfigError(f"{source}: axis {raw_key!r} must be a list of values, e.g. [{values!r}]")
        if not values:
            raise ConfigError(f"{source}: axis {raw_key!r} is empty: give it at least one value or remove it")
        if any(isinstance(v, (dict, list)) for v in values):
            raise ConfigError(f"{source}: axis {raw_key!r} may only hold plain values (numbers, names, paths)")
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(f"{source}: axis {raw_key!r} lists a value twice")
        if key in parsed:
            raise ConfigError(f"{source}: axis {key!r} is given twice")
        parsed[key] = values
    return parsed


def axis_labels(keys: list[str]) -> dict[str, str]:
    """The leaf name of each key (``corrupt_fraction``), or the full key where two leaves clash."""
    leaves = [k.split(".", 1)[1] for k in keys]
    return {k: leaf if leaves.count(leaf) == 1 else k for k, leaf in zip(keys, leaves)}


def format_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    text = str(value)  # floats keep their point: 0.0, 0.5, 0.0001
    return "".join("_" if c == "/" or c.isspace() else c for c in text).lstrip(".") or "_"

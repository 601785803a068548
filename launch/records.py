"""What a launch directory holds, and cg-launch's records in it.

    LAUNCH_DIR/<point>/            each point's run directory (what cg-train writes); for a single
                                   run (`cg-launch run`) the launch directory is the run directory
    LAUNCH_DIR/.launch/points.yaml every point's resolved config as submitted (rewritten atomically)
    LAUNCH_DIR/.launch/jobs.csv    point,job_id,executor,submitted: one row per submission (appended)
    LAUNCH_DIR/.launch/submitit/   submitit's folder: pickled jobs, results, stdout/stderr per job

Points sit directly in the launch directory, so ``cg-analyze LAUNCH_DIR`` sees one experiment
per subdirectory, as seed 004 laid them out.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pandas as pd
import yaml

from cg_train.io import CsvLog, atomic_write_text

JOB_COLUMNS = ("point", "job_id", "executor", "submitted")
#: The point name of a single run: the launch directory itself.
HERE = "."


@dataclass(frozen=True)
class JobRecord:
    point: str
    job_id: str
    executor: str
    submitted: str


class LaunchDir:
    def __init__(self, root: str | Path):
        self.root = Path(root).absolute()
        self.meta = self.root / ".launch"
        self.points_file = self.meta / "points.yaml"
        self.jobs = CsvLog(self.meta / "jobs.csv", JOB_COLUMNS)
        self._jobs_header_checked = False  # jobs.csv's header is checked once, at the first add_jobs
        self.submitit = self.meta / "submitit" / "%j"  # submitit replaces %j by the job id

    def run_dir(self, point: str) -> Path:
        return self.root if point == HERE else self.root / point

    def exists(self) -> bool:
        return self.points_file.is_file()

    def read_points(self) -> dict[str, dict[str, Any]]:
        """Point name -> resolved config (as a dict), for every point ever submitted here."""
        if not self.points_file.is_file():
            return {}
        return yaml.safe_load(self.points_file.read_text()) or {}

    def write_points(self, points: dict[str, dict[str, Any]]) -> None:
        self.meta.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.points_file, yaml.safe_dump(points, sort_keys=False))

    def add_jobs(self, point_jobs: list[tuple[str, str]], executor: str) -> None:
        if not self._jobs_header_checked:
            self.jobs.ensure_header()
            self._jobs_header_checked = True
        now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.jobs.append(*[(point, job_id, executor, now) for point, job_id in point_jobs])

    def latest_jobs(self) -> dict[str, JobRecord]:
        """The last job submitted for each point."""
        if not self.jobs.path.is_file():
            return {}
        rows = pd.read_csv(self.jobs.path, dtype=str, keep_default_na=False)
        return {row.point: JobRecord(row.point, row.job_id, row.executor, row.submitted)
                for row in rows.itertuples(index=False)}

    def latest_job(self, point: str) -> Optional[JobRecord]:
        return self.latest_jobs().get(point)

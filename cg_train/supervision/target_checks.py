"""Is a ``--targets`` table a teacher yet? Its summary, and a refusal while it is still mostly its starting values.

A p_smoothing row is ``q <- (1 - a) q + a p`` once per visit (one per epoch), from a
starting value (``--p-smoothing-init``: the first prediction, the observed label or
uniform). After ``u`` updates the starting value still has weight ``(1 - a)^u``
(``(1 - a)^(u - 1)`` for ``first``, whose first visit sets it): 8 epochs of seed 000's
0.05 leave 70% of every row at the first, barely trained prediction, and Filter-KD then
trains toward that, not toward the teacher.

The criterion (docs/supervision.md, measured there on the embedded digits):

* refused when the mean of that weight over the written rows is above one half
  (``WEAK_ABOVE``: the average row is more starting value than teacher) and the starting
  value carries nothing about the label (``first``: an untrained prediction; ``uniform``).
  A table that is mostly its ``onehot`` start is mostly the observed labels: Filter-KD then
  trains close to CE / label smoothing, which is not a failure; a warning says so. Between
  ``NOTE_ABOVE`` and one half a warning says what is left of the starting value;
* refused, whatever the counts, when its argmax agrees with the observed labels no more
  often than chance (1/K: a table that learned anything beats it at any noise level below
  1 - 1/K), or when no row was ever written;
* a table without update counts (written before they were recorded) is judged by its
  content: also refused when its rows are nearly flat, mean max probability below
  ``FLAT_BELOW`` of the way from uniform (1/K) to one-hot (0.325 for 10 classes: on the
  digits, the tables whose starting value weighs about one half sit there).

``--accept-weak-targets`` trains on a refused table anyway. Every number is summed over the
processes' shards, so every process takes the same decision.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch

from ..data.manifest import UNKNOWN_LABEL
from ..errors import CgTrainError
from ..smoothing_record import (TableRecord, alpha_for_weight, epochs_for_weight, read_record,
                                read_updates, start_weight)
from ..tables import ShardedTable

if TYPE_CHECKING:
    from ..run_context import RunContext

log = logging.getLogger("cg_train")

#: refused above this mean weight of an uninformative starting value (more start than teacher)
WEAK_ABOVE = 0.5
#: a warning above this one (on the digits 21-49% of first predictions cost 3-21 points of top-1 against CE)
NOTE_ABOVE = 0.1
#: starting values that say nothing about the label (onehot is the observed label)
UNINFORMED = ("first", "uniform")
#: without update counts: refused when the mean max probability is below 1/K + FLAT_BELOW * (1 - 1/K)
FLAT_BELOW = 0.25
WHAT = "--targets"
#: what a table's starting values are, per --p-smoothing-init
STARTS = {"first": "the first, barely trained predictions", "onehot": "the observed labels",
          "uniform": "uniform rows"}


@dataclass
class TargetsSummary:
    """What a ``--targets`` table holds (percentages in 0..100; entropy in nats, over written rows)."""

    table: str
    rows: int
    classes: int
    never_written: int
    mean_max_prob: float
    mean_entropy: float
    agree_observed: float  # argmax == observed label, % of written rows
    agree_true: Optional[float]  # argmax == true label, % of written rows whose true label is known
    judged_by: str  # "update counts" or "content"
    alpha: Optional[float] = None
    init: Optional[str] = None
    epochs: Optional[int] = None
    mean_updates: Optional[float] = None
    start_weight: Optional[float] = None  # mean weight of the starting value over written rows
    weak: Optional[str] = None  # why the table cannot teach yet; None: it can
    note: Optional[str] = None  # a warning about an accepted table
    accepted: bool = False  # trained on although weak (--accept-weak-targets)

    def describe(self) -> str:
        true = f", {self.agree_true:.1f}% the true label" if self.agree_true is not None else ""
        if self.judged_by == "update counts":
            made = (f"{self.epochs} epoch(s) at --p-smoothing {self.alpha:g} from --p-smoothing-init {self.init}: "
                    f"{self.mean_updates:.1f} updates per row, the starting value keeps "
                    f"{100 * self.start_weight:.0f}% of a row on average")
        else:
            made = "no update counts beside it (a table of an older version): judged by its content alone"
        verdict = f"REFUSED: {self.weak}" if self.weak and not self.accepted else \
            f"accepted with --accept-weak-targets although {self.weak}" if self.weak else "accepted"
        return (f"--targets {self.table}: {self.rows} rows x {self.classes} classes, {self.never_written} never "
                f"written; mean max probability {self.mean_max_prob:.3f} (uniform {1 / self.classes:.3f}), mean "
                f"entropy {self.mean_entropy:.3f} nats (uniform {math.log(self.classes):.3f}); argmax is the "
                f"observed label for {self.agree_observed:.1f}% of rows{true}; {made}; {verdict}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


#: the sums each process contributes, in this order
_SUMS = ("rows", "never_written", "written", "max_prob", "entropy", "agree_observed", "true_known", "agree_true",
         "start_weight", "updates")


def shard_sums(rows: torch.Tensor, seen: torch.Tensor, observed: torch.Tensor, true: torch.Tensor,
               updates: Optional[torch.Tensor], record: Optional[TableRecord], chunk: int = 1 << 15) -> torch.Tensor:
    """float64 sums over one process's rows (``_SUMS``): written rows only, except the first two; ``chunk``
    rows at a time, so no float64 copy of a whole shard is made (ImageNet: 160k x 1000 per process)."""
    sums = torch.zeros(len(_SUMS), dtype=torch.float64, device=rows.device)
    sums[0], sums[1] = len(rows), (~seen).sum()
    for lo in range(0, len(rows), chunk):
        part, w = slice(lo, lo + chunk), seen[lo:lo + chunk]
        q = rows[part][w].double()
        top, obs, tru = q.argmax(1), observed[part][w], true[part][w]
        known = tru != UNKNOWN_LABEL
        terms = [len(q), q.amax(1).sum(), -torch.special.xlogy(q, q).sum(), (top == obs).sum(), known.sum(),
                 (top[known] == tru[known]).sum()]
        if updates is not None and record is not None:
            u = updates[part][w].long()
            terms += [start_weight(u, record.alpha, record.init).sum(), u.sum()]
        sums[2:2 + len(terms)] += torch.stack([torch.as_tensor(t, dtype=torch.float64, device=rows.device)
                                               for t in terms])
    return sums


def weakness(s: TargetsSummary) -> Optional[str]:
    """Why the table cannot teach yet (with the fix), or None (the documented criterion)."""
    if s.rows == s.never_written:
        return ("none of its rows was ever written (a table from before the teacher trained): use the table of a "
                "later epoch (TEACHER_RUN/p_smoothing.npy is the last epoch's)")
    if s.start_weight is not None and s.start_weight > WEAK_ABOVE and s.init in UNINFORMED:
        epochs = epochs_for_weight(s.alpha, s.init, WEAK_ABOVE)
        alpha = alpha_for_weight(max(1, round(s.mean_updates)), s.init, WEAK_ABOVE)
        larger = f", a larger --p-smoothing ({alpha:.2g} or more for {s.epochs} epochs)" if alpha else ""
        return (f"it is still dominated by its starting values, {STARTS[s.init]} (they keep "
                f"{100 * s.start_weight:.0f}% of a row on average, more than {100 * WEAK_ABOVE:.0f}%), so "
                f"Filter-KD would train toward them rather than the teacher: train the teacher for at least "
                f"{epochs} epochs at --p-smoothing {s.alpha:g}{larger}, or use the table of a later epoch")
    chance = 100 / s.classes
    if s.agree_observed <= chance:
        return (f"its argmax is the observed label for only {s.agree_observed:.1f}% of rows, no more than chance "
                f"({chance:.1f}%): the teacher had not learned the task when it wrote the table; check its "
                f"test.csv, train it longer or use the table of a later epoch")
    flat = 1 / s.classes + FLAT_BELOW * (1 - 1 / s.classes)
    if s.start_weight is None and s.mean_max_prob < flat:
        return (f"its rows are nearly flat (mean max probability {s.mean_max_prob:.3f}, below {flat:.3f}), as a "
                f"table still dominated by its first, barely trained predictions is: train the teacher longer, "
                f"with a larger --p-smoothing, or use the table of a later epoch")
    return None


def caveat(s: TargetsSummary) -> Optional[str]:
    """A warning about a table the criterion accepts: a starting value that is still a visible part of it."""
    if s.start_weight is None or s.start_weight <= NOTE_ABOVE:
        return None
    share = f"its starting values, {STARTS[s.init]}, still keep {100 * s.start_weight:.0f}% of a row on average"
    if s.init not in UNINFORMED and s.start_weight > WEAK_ABOVE:
        return f"{share}: Filter-KD toward it trains close to cross-entropy (label smoothing) on those labels"
    return (f"{share} (refused above {100 * WEAK_ABOVE:.0f}%); such tables taught worse than cross-entropy in "
            f"docs/supervision.md's measurements: a longer teacher run or a larger --p-smoothing gives a cleaner one")


def summarize_targets(ctx: "RunContext", table: ShardedTable, path: Path) -> TargetsSummary:
    """The summary of a loaded ``--targets`` table over every process's shard (collective)."""
    record = read_record(path, WHAT)
    updates = read_updates(path, record, table.n, WHAT) if record is not None else None
    device = table.rows.device
    train = ctx.data.train
    span = slice(table.start, table.stop)
    observed = torch.from_numpy(np.asarray(train.observed_labels[span], dtype=np.int64)).to(device)
    true = torch.from_numpy(np.asarray(train.true_labels[span], dtype=np.int64)).to(device)
    mine = None if updates is None else torch.from_numpy(np.array(updates[span], dtype=np.int64)).to(device)
    sums = shard_sums(table.rows, table.seen, observed, true, mine, record)
    if ctx.world_size > 1:
        sums = ctx.accelerator.reduce(sums, reduction="sum")
    s = dict(zip(_SUMS, sums.tolist()))
    written = max(s["written"], 1.0)
    summary = TargetsSummary(
        table=str(path), rows=int(s["rows"]), classes=table.k, never_written=int(s["never_written"]),
        mean_max_prob=s["max_prob"] / written, mean_entropy=s["entropy"] / written,
        agree_observed=100 * s["agree_observed"] / written,
        agree_true=100 * s["agree_true"] / s["true_known"] if s["true_known"] else None,
        judged_by="update counts" if updates is not None else "content")
    if record is not None:
        summary.alpha, summary.init, summary.epochs = record.alpha, record.init, record.epochs
    if updates is not None:
        summary.mean_updates, summary.start_weight = s["updates"] / written, s["start_weight"] / written
    return summary


def check_targets(ctx: "RunContext", table: ShardedTable, path: Path) -> TargetsSummary:
    """Summarise the loaded table; refuse it in one line when it cannot teach yet, unless accepted."""
    summary = summarize_targets(ctx, table, path)
    summary.weak = weakness(summary)
    summary.note = caveat(summary) if summary.weak is None else None
    summary.accepted = summary.weak is not None and ctx.cfg.supervision.accept_weak_targets
    if summary.weak is not None and not summary.accepted:
        log.info("%s", summary.describe())
        raise CgTrainError(f"--targets {path}: {summary.weak}; or pass --accept-weak-targets to train on it anyway")
    return summary

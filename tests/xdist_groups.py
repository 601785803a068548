"""A pytest plugin (tests/conftest.py imports its hook) that keeps `--dist loadgroup` grouping tests by their
`xdist_group` mark: one SLURM cluster and one DeepSpeed run per session, each on one worker.

pytest-xdist 3.8 sends a group to one worker by an `@group` suffix that its workers write to `item._nodeid`;
pytest 9.2 no longer reads that attribute (node ids are `item._id`, pytest-xdist issue 1386), so the mark was
silently ignored: both workers started a SLURM cluster and raced for dpkg's lock. On an xdist worker this hook
writes the same suffix where pytest reads it (nothing to do where xdist's own suffix took).
"""
from __future__ import annotations

import pytest


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Append `@group` to the node id of every test with an `xdist_group` mark, as xdist means to."""
    if not getattr(config.option, "loadgroup", False):  # set by xdist on its workers under --dist loadgroup
        return
    for item in items:
        marks = item.iter_markers("xdist_group")
        names = {str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in marks}
        suffix = "@" + "_".join(sorted(names))
        if not names or item.nodeid.endswith(suffix):
            continue
        if not hasattr(item, "_id"):
            raise pytest.UsageError(f"--dist loadgroup cannot group {item.nodeid}: this pytest/pytest-xdist pair "
                                    "does not carry the xdist_group mark (reinstall with `make install`)")
        item._id = type(item._id).parse(item.nodeid + suffix)

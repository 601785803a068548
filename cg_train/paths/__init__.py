"""Per-sample path logs on disk: layout and schema, the background writer, merge and training-dynamics export.

The recorder that produces them is :mod:`cg_train.recorders.paths`; everything
here reads or writes files only (no model, no loader).
"""

#!/usr/bin/env bash
# Check every CUDA-only path of cg-train on one GPU in under 10 minutes; one PASS/FAIL/SKIP line per item.
#
#   bash benchmarks/gpu_check.sh                 # all items; throughput rows are appended to BENCHMARKS.md
#   bash benchmarks/gpu_check.sh --list          # the items
#   bash benchmarks/gpu_check.sh --only dali-decode,train-dali-bf16 --work /tmp/gpu-check
#
# Python: $PYTHON if set, else the project's .venv (`make install`), else python3 with the project on
# PYTHONPATH. On a machine where nothing can be installed (no network), wheels put in .whl/ at the repository
# root (omegaconf + antlr4-python3-runtime at least; DALI's, in parts, for the DALI items) are installed into
# a scratch folder first. Items whose needs are missing print `SKIP: <item>: <reason>`. docs/throughput.md.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x "$ROOT/.venv/bin/python" ]; then PY=$ROOT/.venv/bin/python
else PY=python3
fi
WHEELS=${CG_TRAIN_WHEELS:-$ROOT/.whl}
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    SITE=${TMPDIR:-/tmp}/cg-train-gpu-check-site
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "$WHEELS"/*.whl || echo "warning: could not install the wheels in $WHEELS" >&2
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" "$ROOT/benchmarks/gpu_check.py" "$@"

#!/usr/bin/env bash
# `make demo`: bring up the embedded control plane and run the 2-replica DDP example with a live progress bar.
set -euo pipefail
cd "$(dirname "$0")/.."
export SHIPYARD_HOME="${SHIPYARD_HOME:-$PWD/.shipyard-demo}"
shipyard() { .venv/bin/shipyard "$@"; }

# A fresh instance each time, so the job trains from step 0 rather than resuming a finished checkpoint.
shipyard down >/dev/null 2>&1 || true
rm -rf "$SHIPYARD_HOME"

echo "==> shipyard up --detach   (SHIPYARD_HOME=$SHIPYARD_HOME)"
shipyard up --detach --port "${SHIPYARD_PORT:-0}"
echo
echo "==> shipyard render -f examples/train-ddp.yaml | grep kind:   (what a cluster would run)"
shipyard render -f examples/train-ddp.yaml | grep '^kind:'
echo
echo "==> shipyard apply -f examples/train-ddp.yaml --wait"
shipyard apply -f examples/train-ddp.yaml --wait
echo
echo "==> shipyard get trainingjobs -o wide"
shipyard get trainingjobs -o wide
echo
echo "==> shipyard describe trainingjob/train-ddp"
shipyard describe trainingjob/train-ddp
echo
echo "==> shipyard logs trainingjob/train-ddp --tail 3"
shipyard logs trainingjob/train-ddp --tail 3
echo
cat <<MSG
The control plane is still running. Try:
  export SHIPYARD_HOME=$SHIPYARD_HOME
  .venv/bin/shipyard get tj
  .venv/bin/shipyard down        # stops it and everything it started
MSG

#!/usr/bin/env bash
# `make demo`: the LLM lifecycle on the embedded runtime — pre-train a small GPT on 2 DDP replicas, LoRA
# fine-tune it, then serve the result with the OpenAI-compatible server and ask it questions about modules it
# never saw in training. Nothing is downloaded: the text is Python's own documentation and sources.
set -euo pipefail
cd "$(dirname "$0")/.."
export SHIPYARD_HOME="${SHIPYARD_HOME:-$PWD/.shipyard-demo}"
PY=.venv/bin/python
shipyard() { .venv/bin/shipyard "$@"; }

# A fresh instance each time, so the jobs train from step 0 rather than resuming finished checkpoints.
shipyard down >/dev/null 2>&1 || true
rm -rf "$SHIPYARD_HOME"

echo "==> shipyard up --detach   (SHIPYARD_HOME=$SHIPYARD_HOME)"
shipyard up --detach --port "${SHIPYARD_PORT:-0}" --gateway-port "${SHIPYARD_GATEWAY_PORT:-0}"
echo
echo "==> shipyard render -f examples/lifecycle/pretrain.yaml | grep kind:   (what a cluster would run)"
shipyard render -f examples/lifecycle/pretrain.yaml | grep '^kind:'
echo
echo "==> shipyard apply -f examples/lifecycle/pretrain.yaml --wait   (2 replicas, DDP over gloo, ~40 s)"
shipyard apply -f examples/lifecycle/pretrain.yaml --wait
echo
echo "==> shipyard logs trainingjob/pretrain --tail 2"
shipyard logs trainingjob/pretrain --tail 2
echo
echo "==> shipyard apply -f examples/lifecycle/finetune.yaml --wait   (LoRA from the shared volume, ~20 s)"
shipyard apply -f examples/lifecycle/finetune.yaml --wait
echo
echo "==> shipyard get trainingjobs -o wide"
shipyard get trainingjobs -o wide
echo
echo "==> shipyard logs trainingjob/finetune --tail 2"
shipyard logs trainingjob/finetune --tail 2
echo

MODEL="$SHIPYARD_HOME/volumes/default/lifecycle/finetune/merged"
PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "==> python -m shipyard.workloads.serve \$SHIPYARD_HOME/volumes/default/lifecycle/finetune/merged --port $PORT"
"$PY" -m shipyard.workloads.serve "$MODEL" --served-model-name lifecycle --host 127.0.0.1 --port "$PORT" \
    --uvicorn-log-level warning >"$SHIPYARD_HOME/serve.log" 2>&1 &
SERVE_PID=$!
trap 'kill $SERVE_PID 2>/dev/null; wait $SERVE_PID 2>/dev/null || true' EXIT
echo
echo "==> the official openai client asks the served model about held-out modules"
"$PY" - "$PORT" "$SERVE_PID" <<'PY'
import os, sys, time

import httpx
from openai import OpenAI

from shipyard.workloads import instructions

port, serve_pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 120
while True:  # /health answers 503 while the model loads, 200 once it can serve
    try:
        if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
            break
    except httpx.TransportError:
        pass
    try:
        os.kill(serve_pid, 0)  # still there? (it is the shell's child, not ours, so no waitpid)
    except ProcessLookupError:
        sys.exit("serve exited; see $SHIPYARD_HOME/serve.log")
    if time.monotonic() > deadline:
        sys.exit("serve did not become ready in 120 s; see $SHIPYARD_HOME/serve.log")
    time.sleep(0.2)

client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
held_out = instructions.split(instructions.build("stdlib-kind"))[1]
picks = [held_out[i] for i in (0, 5, 10, 15, 25)]  # modules no training example came from
for example in picks:
    reply = client.chat.completions.create(model="lifecycle", max_tokens=8, temperature=0,
                                           messages=[{"role": "user", "content": example.prompt}])
    answer = reply.choices[0].message.content.strip()
    mark = "right" if instructions.exact_match(answer, example.answer) else f"wrong, it is a {example.answer}"
    print(f"  {example.prompt}\n    -> {answer!r} ({mark})")
PY
echo
cat <<MSG
The control plane is still running (serve has been stopped). Try:
  export SHIPYARD_HOME=$SHIPYARD_HOME
  .venv/bin/shipyard get tj
  .venv/bin/shipyard describe trainingjob/finetune
  .venv/bin/python -m shipyard.workloads.serve \$SHIPYARD_HOME/volumes/default/lifecycle/finetune/merged --port 8000
  .venv/bin/shipyard down        # stops it and everything it started
MSG

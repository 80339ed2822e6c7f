#!/usr/bin/env bash
# `make demo`: the LLM lifecycle on the embedded runtime — pre-train a small GPT on 2 DDP replicas, run a
# LoRA fine-tuning sweep (tracked in MLflow, best trial registered), serve the registered model as an Endpoint
# behind the gateway (with a project key) beside the playground App, and ask it questions about modules it
# never saw in training; a Jupyter Lab workspace on the same volume is left running.  Nothing is downloaded: the text is
# Python's own documentation and sources.
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
echo "==> shipyard apply -f examples/lifecycle/sweep.yaml --wait   (4 LoRA trials, 2 at a time, tracked in MLflow, ~1.5 min)"
shipyard apply -f examples/lifecycle/sweep.yaml --wait
echo
echo "==> shipyard get sweep lifecycle-sweep   (trials, best first; the best is registered as models:/lifecycle@champion)"
shipyard get sweep lifecycle-sweep
echo
echo "==> shipyard models"
shipyard models
echo
echo "==> shipyard apply -f examples/lifecycle/serve.yaml -f examples/playground-app.yaml --wait   (behind the gateway)"
shipyard apply -f examples/lifecycle/serve.yaml -f examples/playground-app.yaml --wait
echo
echo "==> shipyard get endpoints; shipyard get apps"
shipyard get endpoints
shipyard get apps
URL=$(shipyard get endpoint lifecycle -o json | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["status"]["url"])')
MLFLOW_URL=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("mlflowUrl"))' "$SHIPYARD_HOME/daemon.json")
APP_URL=$(shipyard get app playground -o json | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["status"]["url"])')
echo
echo "==> shipyard apply -f examples/workspace.yaml   (a Jupyter Lab on the same volume, behind the gateway)"
shipyard apply -f examples/workspace.yaml
for _ in $(seq 1 120); do
  phase=$(shipyard get workspace notebook -o json | "$PY" -c 'import json, sys; print(json.load(sys.stdin).get("status", {}).get("phase", ""))')
  [ "$phase" = Running ] && break
  sleep 1
done
shipyard get workspaces
NOTEBOOK_URL=$(shipyard open workspace/notebook --no-browser)
echo
echo "==> shipyard apikey create demo   (a project key: the gateway refuses requests without one)"
KEY=$(shipyard apikey create demo --quiet)
echo "${KEY:0:12}… (printed once; kept only as a hash)"
echo
echo "==> the official openai client, through the gateway, asks about modules no training example came from"
"$PY" - "$URL" "$KEY" <<'PY'
import sys

from openai import OpenAI

from shipyard.workloads import instructions

url, key = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=url + "v1", api_key=key)
held_out = instructions.split(instructions.build("stdlib-kind"))[1]
for example in [held_out[i] for i in (0, 5, 10, 15, 25)]:
    reply = client.chat.completions.create(model="lifecycle", max_tokens=8, temperature=0,
                                           messages=[{"role": "user", "content": example.prompt}])
    answer = reply.choices[0].message.content.strip()
    mark = "right" if instructions.exact_match(answer, example.answer) else f"wrong, it is a {example.answer}"
    print(f"  {example.prompt}\n    -> {answer!r} ({mark})")
PY
echo
cat <<MSG
Everything is still running. Try:
  export SHIPYARD_HOME=$SHIPYARD_HOME
  curl -s ${URL}v1/chat/completions -H "Authorization: Bearer \$(.venv/bin/shipyard apikey create mine -q)" \\
       -H 'Content-Type: application/json' \\
       -d '{"model": "lifecycle", "messages": [{"role": "user", "content": "Is \`json.dumps\` a class, a function or a constant?"}]}'
  open $APP_URL          # the playground (Gradio), calling the endpoint through the gateway
  open '$NOTEBOOK_URL'   # Jupyter Lab (its token is in the URL); /lifecycle holds the models above
  .venv/bin/shipyard get endpoints -w     # watch it scale (to zero after 5 idle minutes)
  open $MLFLOW_URL        # MLflow: the sweep as a parent run, trials as child runs, the registered model
  .venv/bin/shipyard down                 # stops it and everything it started
MSG

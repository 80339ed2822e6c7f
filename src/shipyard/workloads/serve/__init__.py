"""`serve`: an OpenAI-compatible HTTP server for a saved Hugging Face causal LM directory.

    python -m shipyard.workloads.serve /models/gpt --port 8000

Layout, one responsibility per module:
  cli.py        flags (vLLM's names where they overlap), socket, uvicorn, signals, `--engine vllm` hand-off
  loader.py     what the server is (Settings) and its lifecycle state; loads model + tokenizer off the event loop
  app.py        FastAPI routes: /v1/models, /v1/completions, /v1/chat/completions, /health, /metrics
  protocol.py   request validation (pydantic) and OpenAI-shaped responses and stream chunks
  errors.py     OpenAI-style error bodies; every client mistake is a 4xx with one clear message
  handoff.py    the thread-safe bridge between the engine thread and asyncio handlers
  engine.py     continuous batching: one thread, one forward per step over all in-flight sequences
  kvbatch.py    the batched, left-padded KV cache those steps run on
  sampling.py   temperature / top-p / top-k / penalties with a per-request generator
  detokenizer.py incremental text and stop strings
  chat.py       chat messages -> prompt text via the tokenizer's chat_template
  metrics.py    Prometheus metrics and the middleware that counts requests

Like every built-in workload it imports nothing of Shipyard outside `shipyard.workloads`, and torch and
transformers are imported only by the loading thread, so the socket answers `/health` (503) within about a
second while the 4–6 s import and the model load happen in the background.
"""

"""Serve throughput: output tokens/s and time to first token of the built-in OpenAI-compatible server at several
concurrency levels, beside a naive server loop that calls `model.generate` for one request at a time.

The model is what the pretrain workload writes (its default size, ~5.4M parameters, with its BPE tokenizer and
chat template) after a single step: the weights are nearly random, so every request sets `ignore_eos` (vLLM's
extension, which serve accepts) and produces exactly `--max-tokens` tokens — a fixed amount of work per request
whatever the weights say. Requests are streamed chat completions (as a chat UI sends them); the time to first
token is measured at the first content chunk, client side, so it includes queueing behind other requests.

The naive loop runs in its own process with the same thread count: for each request, apply the chat template
and `generate(max_new_tokens=N, min_new_tokens=N)` greedily. One at a time, its throughput does not depend on
concurrency: every ratio divides by the same figure.

Usage: python benchmarks/serve_throughput.py [--concurrency 1,8,32] [--max-tokens 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

# Short questions in the shape the lifecycle's chat endpoint gets; cycled through the requests.
PROMPTS = [
    "What does the json module do?", "Is textwrap.dedent a class, a function or a constant?",
    "Explain what a context manager is.", "How do I read a file line by line in Python?",
    "What is the difference between a list and a tuple?", "Which module parses command-line options?",
    "Write a haiku about garbage collection.", "What does functools.lru_cache cache?",
]

_NAIVE_SCRIPT = """
import json, sys, time, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
model_dir, threads, max_tokens, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
prompts = json.loads(sys.argv[5])
torch.set_num_threads(threads)
tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
def one(prompt):
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    return out.shape[1] - ids["input_ids"].shape[1]
one(prompts[0])  # warm-up, as the server has served requests before being measured
started, tokens = time.perf_counter(), 0
for i in range(count):
    tokens += one(prompts[i % len(prompts)])
print(json.dumps({"tokens": tokens, "seconds": time.perf_counter() - started}))
"""


def build_model(work: Path, timeout: float) -> Path:
    """One pretrain step at the default size: a real pretrain output directory (weights, tokenizer, template)."""
    out = work / "model"
    subprocess.run([sys.executable, "-m", "shipyard.workloads.pretrain", "--steps=1", "--checkpoint-every=0",
                    "--eval-batches=1", "--seq-len=512", f"--output-dir={out}", f"--tokenizer-dir={work / 'tok'}"],
                   env=common.clean_env(TOKENIZERS_PARALLELISM="false"), cwd=common.ROOT, check=True,
                   capture_output=True, timeout=timeout)
    return out


def naive(model: Path, args: argparse.Namespace) -> dict:
    result = subprocess.run([sys.executable, "-c", _NAIVE_SCRIPT, str(model), str(args.threads), str(args.max_tokens),
                             str(args.naive_requests), json.dumps(PROMPTS)],
                            env=common.clean_env(OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false"),
                            cwd=common.ROOT, capture_output=True, text=True, timeout=args.timeout)
    if result.returncode != 0:
        raise RuntimeError(f"naive generate loop failed:\n{result.stderr[-3000:]}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return {"tokens_per_second": figures["tokens"] / figures["seconds"], **figures}


async def _one_request(client, url: str, prompt: str, max_tokens: int) -> tuple[float, int]:
    """(seconds to the first content chunk, completion tokens) of one streamed chat completion."""
    body = {"model": "bench", "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first, tokens = None, 0
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if first is None and any(c["delta"].get("content") for c in chunk.get("choices", [])):
                first = time.perf_counter() - started
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return (first if first is not None else time.perf_counter() - started), tokens


async def load(url: str, concurrency: int, requests: int, max_tokens: int) -> dict:
    """`requests` requests, `concurrency` in flight at all times (a closed loop, like N users)."""
    import httpx

    ttfts: list[float] = []
    tokens = 0
    queue = list(range(requests))
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        async def user() -> None:
            nonlocal tokens
            while queue:
                i = queue.pop()
                ttft, n = await _one_request(client, url, PROMPTS[i % len(PROMPTS)], max_tokens)
                ttfts.append(ttft)
                tokens += n
        started = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    ttfts.sort()
    return {"concurrency": concurrency, "requests": requests, "tokens": tokens, "seconds": seconds,
            "tokens_per_second": tokens / seconds, "ttft_p50": _percentile(ttfts, 50),
            "ttft_p99": _percentile(ttfts, 99)}


def _percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: with 16 samples p99 is the slowest one)."""
    rank = max(1, -(-len(sorted_values) * pct // 100))
    return sorted_values[int(rank) - 1]


def run(args: argparse.Namespace) -> dict:
    import httpx

    levels = [int(c) for c in args.concurrency.split(",")]
    print(f"== serve throughput (pretrain's default GPT, {args.max_tokens} output tokens per request, "
          f"{args.threads} threads)", flush=True)
    with tempfile.TemporaryDirectory(prefix="shipyard-bench-serve-") as tmp:
        work = Path(tmp)
        common.log("building the model (one pretrain step)…")
        model = build_model(work, args.timeout)
        common.log(f"naive loop: {args.naive_requests} requests one at a time…")
        baseline = naive(model, args)
        port = common.free_port()
        url = f"http://127.0.0.1:{port}"
        with open(work / "serve.log", "wb") as log_file:
            server = subprocess.Popen(
                [sys.executable, "-m", "shipyard.workloads.serve", str(model), "--served-model-name", "bench",
                 "--host", "127.0.0.1", "--port", str(port), "--threads", str(args.threads),
                 "--max-batch-size", str(max(levels)), "--uvicorn-log-level", "warning"],
                env=common.clean_env(TOKENIZERS_PARALLELISM="false"), cwd=common.ROOT, stdout=log_file,
                stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while True:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"serve did not become ready:\n{(work / 'serve.log').read_text()[-3000:]}")
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)  # polling a server that is loading: there is no event to wait on
            asyncio.run(load(url, 1, 2, args.max_tokens))  # warm-up
            results = []
            with common.ForeignLoad(roots=[server.pid]) as foreign:
                for c in levels:
                    common.log(f"concurrency {c}: {args.requests_per_level * c} requests…")
                    results.append(asyncio.run(load(url, c, max(args.requests_per_level * c, 4), args.max_tokens)))
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    rows = [[r["concurrency"], r["requests"], f"{r['tokens_per_second']:,.0f}",
             f"{r['tokens_per_second'] / baseline['tokens_per_second']:.1f}×", f"{r['ttft_p50'] * 1000:,.0f}",
             f"{r['ttft_p99'] * 1000:,.0f}"] for r in results]
    print(common.table(["concurrency", "requests", "output tokens/s", "vs naive generate", "TTFT p50 ms",
                        "TTFT p99 ms"], rows))
    print(f"naive generate loop, one request at a time: {baseline['tokens_per_second']:,.0f} tokens/s "
          f"({args.naive_requests} requests); foreign load during the serve runs: {foreign.cores:.2f} cores",
          flush=True)
    return {"naive": baseline, "results": results, "foreign_cores": foreign.cores}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated concurrency levels")
    parser.add_argument("--max-tokens", type=int, default=64, help="output tokens per request")
    parser.add_argument("--requests-per-level", type=int, default=3,
                        help="requests per level = this × concurrency (at least 4)")
    parser.add_argument("--naive-requests", type=int, default=6, help="requests the naive loop serves")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1),
                        help="torch threads for serve and for the naive loop")
    parser.add_argument("--timeout", type=float, default=900)


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    try:
        levels = [int(c) for c in args.concurrency.split(",")]
    except ValueError:
        parser.error("--concurrency: comma-separated positive integers, like 1,8,32")
    if min(levels) < 1 or args.max_tokens < 1 or args.naive_requests < 1 or args.requests_per_level < 1:
        parser.error("--concurrency, --max-tokens, --naive-requests and --requests-per-level must be positive")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    print(f"on {common.machine()}", flush=True)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

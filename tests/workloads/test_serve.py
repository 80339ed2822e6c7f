"""The serve workload: the batching engine in-process, then a real server driven by the official openai client.

Engine tests prove batching is *correct* (a sequence decodes to the same tokens alone, in a batch, joining a
batch mid-way, or beside rows that leave early) and equal to `model.generate`; server tests prove the OpenAI
surface, errors, auth, the loading phase, metrics, graceful SIGTERM and that batching is *real* (8 concurrent
requests beat the same 8 sequentially).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import wait_for
from tests.workloads.serve_fixtures import ROOT, ServeProcess, build_tiny_model

openai = pytest.importorskip("openai")
pytest.importorskip("transformers")

PROMPTS = ["def foo(x):", "import os\nclass A:\n    pass\n# a longer prompt than the others, by far", "x",
           "return None if value else", "The quick brown fox"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("serve") / "tiny-gpt")


# ---- engine, in-process -----------------------------------------------------------------------------------
class Collector:
    """An engine sink that gathers each sequence's text and signals when all have finished."""

    def __init__(self):
        self.texts, self.reasons, self.tokens = {}, {}, {}
        self.open = 0
        self.done = threading.Event()

    def expect(self, n):
        self.open += n
        self.done.clear()

    def __call__(self, items):
        for seq, out in items:
            self.texts[seq.index] = self.texts.get(seq.index, "") + out.text
            if out.finished:
                self.reasons[seq.index] = out.finish_reason
                self.tokens[seq.index] = list(seq.output_ids)
                self.open -= 1
        if self.open == 0:
            self.done.set()


@pytest.fixture(scope="module")
def engine_parts(model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from shipyard.workloads.serve.engine import Engine

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the server is run in these tests: robust against a busy machine
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    sink = Collector()
    engine = Engine(model, tokenizer, sink=sink, max_batch_size=8, max_prefill_tokens=64,
                    eos_token_ids=(tokenizer.eos_token_id,))
    engine.start()
    yield model, tokenizer, engine, sink
    engine.stop(timeout=10)
    torch.set_num_threads(threads)


def _run(engine, sink, jobs, stagger=None):
    """jobs: [(index, prompt_ids, params)]; with stagger, the second half is submitted after the first steps."""
    from shipyard.workloads.serve.engine import Sequence

    sink.texts.clear(), sink.reasons.clear(), sink.tokens.clear()
    seqs = [Sequence(prompt_ids=ids, params=p, index=i) for i, ids, p in jobs]
    sink.expect(len(seqs))
    if stagger is None:
        engine.submit(seqs)
    else:
        engine.submit(seqs[:stagger])
        wait_for(lambda: all(s.output_ids for s in seqs[:stagger]), timeout=30, message="first tokens")
        engine.submit(seqs[stagger:])
    assert sink.done.wait(60), "engine did not finish"
    return dict(sink.tokens), dict(sink.texts), dict(sink.reasons)


def test_batched_greedy_equals_single_and_generate(engine_parts):
    import torch
    from transformers import GenerationConfig

    from shipyard.workloads.serve.protocol import SamplingParams

    model, tokenizer, engine, sink = engine_parts
    ids = [tokenizer(p)["input_ids"] for p in PROMPTS]
    # Different lengths make rows leave the batch at different steps (select + trim of the shared cache).
    params = [SamplingParams(max_tokens=12 + 7 * i, temperature=0, ignore_eos=True) for i in range(len(ids))]
    jobs = [(i, ids[i], params[i]) for i in range(len(ids))]

    alone = {}
    for job in jobs:
        alone.update(_run(engine, sink, [job])[0])
    together = _run(engine, sink, jobs)[0]
    # Rows join a running batch: first narrower than it (newcomers padded), then wider (the batch is padded).
    joined_late = _run(engine, sink, jobs, stagger=2)[0]
    joined_wider = _run(engine, sink, jobs[::-1], stagger=2)[0]
    assert together == alone
    assert joined_late == alone and joined_wider == alone
    assert len(set(map(tuple, alone.values()))) == len(ids), "degenerate model: outputs are identical"
    for i, prompt in enumerate(ids):
        # eos_token_id=None: run to max_new_tokens like ignore_eos (min_new_tokens would instead ban EOS).
        config = GenerationConfig(max_new_tokens=params[i].max_tokens, do_sample=False, eos_token_id=None,
                                  pad_token_id=tokenizer.pad_token_id)
        with torch.inference_mode():
            ref = model.generate(torch.tensor([prompt]), generation_config=config)
        assert ref[0, len(prompt):].tolist() == alone[i], f"prompt {i} differs from model.generate"


def test_engine_sampling_is_reproducible_and_stops(engine_parts):
    from shipyard.workloads.serve.protocol import SamplingParams

    _, tokenizer, engine, sink = engine_parts
    ids = tokenizer(PROMPTS[0])["input_ids"]
    seeded = SamplingParams(max_tokens=20, temperature=1.0, top_p=0.9, seed=1234, ignore_eos=True)
    first = _run(engine, sink, [(0, ids, seeded)])[0][0]
    # Same seed, now sharing a batch with other sampled rows: same tokens.
    crowd = [(i, tokenizer(p)["input_ids"], SamplingParams(max_tokens=20, temperature=1.0, ignore_eos=True))
             for i, p in enumerate(PROMPTS[1:], start=1)]
    again = _run(engine, sink, [(0, ids, seeded), *crowd])[0][0]
    assert first == again
    other = _run(engine, sink, [(0, ids, SamplingParams(max_tokens=20, temperature=1.0, seed=99, ignore_eos=True))])
    assert other[0][0] != first

    greedy = _run(engine, sink, [(0, ids, SamplingParams(max_tokens=30, temperature=0, ignore_eos=True))])[1][0]
    stop = greedy[len(greedy) // 2:len(greedy) // 2 + 3]
    cut = greedy[:greedy.index(stop)]
    _, texts, reasons = _run(engine, sink, [(0, ids, SamplingParams(max_tokens=30, temperature=0, ignore_eos=True,
                                                                    stop=(stop,)))])
    assert (texts[0], reasons[0]) == (cut, "stop")


def test_detokenizer_streams_exact_text_and_cuts_stop_strings(engine_parts):
    from shipyard.workloads.serve.detokenizer import IncrementalDetokenizer

    tokenizer = engine_parts[1]
    text = "naïve café — ✓ done\n    indent ###tail"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    plain = IncrementalDetokenizer(tokenizer)
    assert "".join(plain.add(t) for t in ids) + plain.flush() == text

    stopping = IncrementalDetokenizer(tokenizer, stop=("###",))
    pieces = []
    for t in ids:
        pieces.append(stopping.add(t))
        assert "#" not in "".join(pieces), "a prefix of the stop string was sent before it could be ruled out"
        if stopping.stopped:
            break
    assert stopping.stopped and "".join(pieces) == "naïve café — ✓ done\n    indent "


def test_a_failing_forward_fails_its_requests_not_the_engine(engine_parts):
    from shipyard.workloads.serve.engine import Engine, Sequence
    from shipyard.workloads.serve.protocol import SamplingParams

    model, tokenizer, _, _ = engine_parts
    broken = {"on": True}

    class Flaky(type(model)):
        def forward(self, *args, **kwargs):
            if broken["on"]:
                raise RuntimeError("out of memory (simulated)")
            return super().forward(*args, **kwargs)

    flaky_model = Flaky(model.config).eval()
    flaky_model.load_state_dict(model.state_dict())
    sink = Collector()
    engine = Engine(flaky_model, tokenizer, sink=sink, eos_token_ids=(tokenizer.eos_token_id,))
    engine.start()
    try:
        ids = tokenizer(PROMPTS[0])["input_ids"]
        _, _, reasons = _run(engine, sink, [(0, ids, SamplingParams(max_tokens=5, temperature=0))])
        assert reasons == {0: "error"} and engine.alive
        broken["on"] = False
        tokens, _, reasons = _run(engine, sink, [(0, ids, SamplingParams(max_tokens=5, temperature=0,
                                                                         ignore_eos=True))])
        assert reasons == {0: "length"} and len(tokens[0]) == 5
    finally:
        engine.stop(timeout=10)


def test_chat_falls_back_to_a_plain_template(engine_parts):
    from shipyard.workloads.serve import chat

    tokenizer = engine_parts[1]
    saved, tokenizer.chat_template = tokenizer.chat_template, None
    try:
        text = chat.render(tokenizer, [{"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"}])
    finally:
        tokenizer.chat_template = saved
    assert text == "developer: be brief\nuser: hi\nassistant:"


# ---- command line ------------------------------------------------------------------------------------------
def _serve_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "shipyard.workloads.serve", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=env)


def test_cli_errors_are_one_line(tmp_path):
    missing = _serve_cli(str(tmp_path / "nope"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    vllm = _serve_cli(str(tmp_path), "--engine", "vllm")
    assert vllm.returncode == 1 and "Traceback" not in vllm.stderr
    assert vllm.stderr.startswith("error: --engine vllm needs") and len(vllm.stderr.strip().splitlines()) == 1


def test_engine_vllm_execs_vllm_with_the_same_flags(monkeypatch, tmp_path):
    import importlib.util
    import os

    import torch

    from shipyard.workloads.serve import cli

    execs = []
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(os, "execve", lambda exe, argv, env: execs.append((argv, env)))
    cli.main([str(tmp_path), "--engine", "vllm", "--port", "9001", "--served-model-name", "a", "b",
              "--max-model-len", "512", "--max-batch-size", "8", "--dtype", "bf16", "--api-key", "k"])
    (argv, env), = execs
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    flags = " ".join(argv[3:])
    for expected in (f"--model {tmp_path}", "--host 0.0.0.0", "--port 9001", "--max-model-len 512",
                     "--max-num-seqs 8", "--dtype bfloat16", "--served-model-name a b"):
        assert expected in flags
    assert env["VLLM_API_KEY"] == "k" and "k" not in argv  # the key travels by environment, not argv


# ---- a real server -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    proc = ServeProcess(model_dir, tmp_path_factory.mktemp("logs") / "serve.log", "--max-model-len", "160",
                        "--max-batch-size", "16", "--served-model-name", "tiny", "tiny-alias", "--threads", "1")
    try:
        proc.wait_status(200)
        yield proc
    finally:
        assert proc.stop() == 0, proc.log()


@pytest.fixture
def client(server):
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60) as c:
        yield c


CHAT = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a prime."}]


@pytest.mark.slow
def test_openai_client_completion_chat_and_stream(client):
    assert [m.id for m in client.models.list().data] == ["tiny", "tiny-alias"]
    completion = client.completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=12, temperature=0,
                                           extra_body={"ignore_eos": True})
    assert completion.choices[0].finish_reason == "length" and completion.choices[0].text
    assert completion.usage.completion_tokens == 12 and completion.usage.prompt_tokens > 0

    chat = client.chat.completions.create(model="tiny-alias", messages=CHAT, max_tokens=24, temperature=0, seed=3)
    message = chat.choices[0].message
    assert message.role == "assistant" and chat.choices[0].finish_reason in ("stop", "length")
    assert chat.model == "tiny"

    chunks = list(client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=24, temperature=0, seed=3,
                                                 stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == chat.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == chat.usage.completion_tokens

    pieces = list(client.completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=12, temperature=0,
                                            stream=True, extra_body={"ignore_eos": True}))
    assert "".join(p.choices[0].text for p in pieces) == completion.choices[0].text


@pytest.mark.slow
def test_sampling_seed_stop_and_context_cap(client, server):
    def sample(seed):
        return client.completions.create(model="tiny", prompt=PROMPTS[3], max_tokens=16, temperature=1.0, seed=seed,
                                         extra_body={"ignore_eos": True}).choices[0].text

    assert sample(7) == sample(7)
    greedy = client.completions.create(model="tiny", prompt=PROMPTS[1], max_tokens=30, temperature=0,
                                       extra_body={"ignore_eos": True}).choices[0].text
    stop = greedy[len(greedy) // 2:len(greedy) // 2 + 3]
    stopped = client.completions.create(model="tiny", prompt=PROMPTS[1], max_tokens=30, temperature=0, stop=[stop],
                                        extra_body={"ignore_eos": True}).choices[0]
    assert (stopped.text, stopped.finish_reason) == (greedy[:greedy.index(stop)], "stop")

    # max_tokens beyond --max-model-len (160) is capped to what fits after the prompt.
    capped = client.completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=10_000, temperature=0,
                                       extra_body={"ignore_eos": True})
    assert capped.usage.prompt_tokens + capped.usage.completion_tokens == 160
    assert capped.choices[0].finish_reason == "length"
    with pytest.raises(openai.BadRequestError) as too_long:
        client.completions.create(model="tiny", prompt="word " * 400, max_tokens=5)
    assert too_long.value.code == "context_length_exceeded"

    both = client.completions.create(model="tiny", prompt=[PROMPTS[0], PROMPTS[2]], max_tokens=5, temperature=0)
    assert [c.index for c in both.choices] == [0, 1]


@pytest.mark.slow
def test_client_mistakes_are_400_with_a_message(server):
    def post(route, body, raw=False):
        content = body if raw else json.dumps(body)
        r = httpx.post(f"{server.url}/v1/{route}", content=content, headers={"content-type": "application/json"})
        return r.status_code, r.json()["error"]

    cases = [
        ("chat/completions", "{not json", True, None),
        ("chat/completions", {"model": "tiny"}, False, "messages"),
        ("chat/completions", {"messages": CHAT, "n": 2}, False, "n"),
        ("chat/completions", {"messages": CHAT, "model": "gpt-9"}, False, "model"),
        ("chat/completions", {"messages": [{"role": "tool", "content": "x"}]}, False, "messages"),  # template raises
        ("chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, False,
         "messages.0.content"),
        ("completions", {"prompt": "a", "max_tokens": "many"}, False, "max_tokens"),
        ("completions", {"prompt": "a", "temperature": -1}, False, "temperature"),
        ("completions", {"prompt": "a", "logprobs": 3}, False, "logprobs"),
        ("completions", [1, 2], False, None),
    ]
    for route, body, raw, param in cases:
        status, error = post(route, body, raw)
        assert status == 400, (body, error)
        assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"], error
    assert "JSON" in post("completions", "{not json", True)[1]["message"]
    assert post("chat/completions", {"model": "tiny"})[1]["message"] == "Missing required parameter: 'messages'."
    assert post("chat/completions", {"messages": CHAT, "model": "gpt-9"})[1]["code"] == "model_not_found"


@pytest.mark.slow
def test_concurrent_requests_are_batched(client, server):
    def one(prompt):
        return client.completions.create(model="tiny", prompt=prompt, max_tokens=64, temperature=0,
                                         extra_body={"ignore_eos": True}).choices[0].text

    prompts = [f"{PROMPTS[i % len(PROMPTS)]} #{i}" for i in range(8)]
    one(prompts[0])  # warm the connection pool and allocator
    started = time.monotonic()
    sequential = [one(p) for p in prompts]
    sequential_s = time.monotonic() - started
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(one, prompts))
    concurrent_s = time.monotonic() - started
    assert concurrent == sequential  # same greedy text whether alone or batched
    assert concurrent_s < 0.6 * sequential_s, f"concurrent {concurrent_s:.2f}s vs sequential {sequential_s:.2f}s"
    metrics = httpx.get(f"{server.url}/metrics").text
    single_steps = _metric(metrics, 'shipyard_serve_batch_size_bucket{le="1.0"}')
    assert _metric(metrics, "shipyard_serve_batch_size_count") > single_steps, "no decode step had >1 sequence"


def _metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.mark.slow
def test_metrics_and_abandoned_stream(server, client):
    client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=4)
    with httpx.stream("POST", f"{server.url}/v1/completions", json={
            "prompt": "x", "max_tokens": 150, "temperature": 0, "ignore_eos": True, "stream": True}) as r:
        next(r.iter_lines())  # one chunk arrived, then the client hangs up mid-stream
    wait_for(lambda: _metric(httpx.get(f"{server.url}/metrics").text, "shipyard_serve_sequences_running") == 0,
             timeout=20, message="the abandoned stream's sequence to be aborted")
    text = httpx.get(f"{server.url}/metrics").text
    assert _metric(text, 'shipyard_serve_requests_total{route="/v1/chat/completions",status="200"}') >= 1
    assert _metric(text, "shipyard_serve_completion_tokens_total") >= 4
    assert _metric(text, "shipyard_serve_prompt_tokens_total") > 0
    assert _metric(text, "shipyard_serve_time_to_first_token_seconds_count") >= 1
    assert _metric(text, 'shipyard_serve_request_latency_seconds_count{route="/v1/chat/completions"}') >= 1
    assert _metric(text, "shipyard_serve_requests_in_flight") == 0


@pytest.mark.slow
def test_loading_phase_auth_and_graceful_sigterm(model_dir, tmp_path):
    gate = tmp_path / "gate"
    proc = ServeProcess(model_dir, tmp_path / "serve.log", "--api-key", "sesame",
                        env={"SHIPYARD_SERVE_LOAD_GATE": str(gate)})
    try:
        proc.wait_status(503)  # listening, model not loaded
        auth = {"Authorization": "Bearer sesame"}
        loading = httpx.post(f"{proc.url}/v1/completions", json={"prompt": "a"}, headers=auth)
        assert loading.status_code == 503 and loading.json()["error"]["code"] == "model_loading"
        assert httpx.get(f"{proc.url}/v1/models", headers={"Authorization": "Bearer nope"}).status_code == 401
        gate.touch()
        proc.wait_status(200)

        with openai.OpenAI(base_url=f"{proc.url}/v1", api_key="wrong", max_retries=0) as bad:
            with pytest.raises(openai.AuthenticationError):
                bad.models.list()
        assert httpx.get(f"{proc.url}/v1/models").status_code == 401
        assert httpx.get(f"{proc.url}/health").status_code == 200  # probes carry no key
        with openai.OpenAI(base_url=f"{proc.url}/v1", api_key="sesame", max_retries=0) as good:
            stream = good.completions.create(model=model_dir.name, prompt="x", max_tokens=120, temperature=0,
                                             stream=True, extra_body={"ignore_eos": True})
            chunks = [next(iter(stream))]
            proc.proc.send_signal(15)  # SIGTERM mid-stream: the stream still runs to its end
            chunks.extend(stream)
        assert chunks[-1].choices[0].finish_reason == "length"
        proc.proc.wait(30)
        assert proc.proc.returncode == 0, proc.log()
    finally:
        proc.stop()

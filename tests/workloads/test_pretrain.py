"""The built-in pretrain workload and its shared modules (corpus, tokenizer, progress, checkpoint).

The slow tests run real 2-rank DDP training on CPU (gloo on 127.0.0.1, one thread per rank) with a tiny model,
so each launch costs mostly the torch/transformers import.
"""

from __future__ import annotations

import io
import json
import math
import re
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from shipyard.workloads import checkpoint, corpus, progress
from shipyard.workloads import tokenizer as bpe
from shipyard.workloads.pretrain import TokenWindows, parse_args
from tests.conftest import wait_for

from .conftest import ROOT, train_losses, progress_lines, wait_exit, wait_progress

TINY_CORPUS = 300_000


def tiny_args(tokenizer_cache, steps: int, **flags) -> list[str]:
    args = {"steps": steps, "batch-size": 8, "seq-len": 64, "n-layer": 2, "n-head": 2, "n-embd": 64,
            "vocab-size": 1024, "max-corpus-bytes": TINY_CORPUS, "log-every": 1, "warmup-steps": 5, "lr": 3e-3,
            "seed": 7, "tokenizer-dir": tokenizer_cache, **flags}
    return [item for key, value in args.items() for item in (f"--{key}", str(value))] + ["--deterministic"]


# ---------------------------------------------------------------------------------------------- progress

def test_progress_prints_one_parseable_line_on_rank_zero_only(monkeypatch):
    out = io.StringIO()
    monkeypatch.setenv("RANK", "0")
    line = progress.report(3, 10, loss=2.5, tokens_per_second=100.0, lr=1e-3, eval_loss=float("nan"), stream=out)
    assert out.getvalue() == line + "\n" and line.startswith("SHIPYARD_PROGRESS {")
    # NaN is not JSON: it is dropped rather than breaking the whole line.
    assert json.loads(line.split(" ", 1)[1]) == {"step": 3, "total_steps": 10, "loss": 2.5,
                                                 "tokens_per_second": 100.0, "lr": 0.001}
    monkeypatch.setenv("RANK", "1")
    assert progress.report(4, 10, loss=2.0, stream=out) is None and out.getvalue().count("\n") == 1
    with pytest.raises(TypeError):
        progress.format_line(1, 2, note="text")


def test_progress_module_needs_nothing_of_shipyard():
    source = (ROOT / "src/shipyard/workloads/progress.py").read_text()
    assert not re.search(r"^\s*(from|import)\s+(shipyard|torch)", source, re.M)


# ------------------------------------------------------------------------------------ corpus, tokenizer

def test_corpus_is_deterministic_capped_and_split_by_name():
    docs = corpus.load_documents(TINY_CORPUS)
    again = corpus.load_documents(TINY_CORPUS)
    assert [d.name for d in docs] == [d.name for d in again]
    assert corpus.fingerprint(docs) == corpus.fingerprint(again)
    assert sum(d.nbytes for d in docs) <= TINY_CORPUS
    assert any(d.name.startswith("pydoc:") for d in docs) and any(d.name.startswith("stdlib:") for d in docs)
    assert not any("/test/" in d.name or "site-packages" in d.name for d in docs)
    train, val = corpus.split(docs, 0.05)
    assert train and val and len(train) + len(val) == len(docs)
    assert {d.name for d in train}.isdisjoint(d.name for d in val)
    # A document's side depends on its name only, not on which other documents were chosen (beyond the
    # fallback that holds one document out of a corpus too small to have any validation by hash).
    _, bigger_val = corpus.split(corpus.load_documents(4_000_000), 0.05)
    assert len(bigger_val) > 1
    assert {d.name for d in bigger_val} & {d.name for d in docs} <= {d.name for d in val}


def test_tokenizer_is_cached_and_has_chat_template(tmp_path):
    docs = [d.text for d in corpus.load_documents(100_000)]
    tok, cache = bpe.load_or_train(tmp_path, "f" * 64, 512, docs)
    mtime = (cache / bpe.TOKENIZER_FILE).stat().st_mtime_ns
    again, cache2 = bpe.load_or_train(tmp_path, "f" * 64, 512, iter(()))  # no texts: must come from the cache
    assert cache2 == cache and again.to_str() == tok.to_str()
    assert (cache / bpe.TOKENIZER_FILE).stat().st_mtime_ns == mtime
    assert [tok.token_to_id(t) for t in bpe.SPECIAL_TOKENS] == list(range(len(bpe.SPECIAL_TOKENS)))

    hf = bpe.to_transformers(tok, model_max_length=64)
    assert hf.eos_token == bpe.ENDOFTEXT and hf.pad_token == bpe.PAD and hf.pad_token_id != hf.eos_token_id
    text = "def f(x):\n    return x  # ünïcode"
    assert hf.decode(hf(text)["input_ids"]) == text
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    rendered = hf.apply_chat_template(chat, tokenize=False)
    assert rendered == "<|user|>\nhi<|endoftext|><|assistant|>\nhello<|endoftext|>"
    prompt = hf.apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|assistant|>\n")
    masked = hf.apply_chat_template(chat, return_dict=True, return_assistant_tokens_mask=True)
    reply = [i for i, m in zip(masked["input_ids"], masked["assistant_masks"]) if m]
    assert hf.decode(reply) == "hello<|endoftext|>"


def test_token_windows_resume_exactly_from_a_cursor():
    tokens = torch.arange(10_000, dtype=torch.int32)
    a, b = TokenWindows(tokens, 16, seed=1), TokenWindows(tokens, 16, seed=1)
    x, y = a.batch(first=600, size=8)  # crosses into the second epoch (624 windows per epoch)
    x2, y2 = b.batch(first=600, size=8)
    assert torch.equal(x, x2) and torch.equal(y, y2) and torch.equal(x[:, 1:], y[:, :-1])
    epoch = torch.cat([a.batch(i, 1)[0] for i in range(a.count)])
    assert sorted(epoch[:, 0].tolist()) == [i * 16 for i in range(a.count)]  # each window once per epoch


def test_pretrain_flags_have_sane_defaults():
    args = parse_args([])
    assert (args.n_layer, args.n_embd, args.vocab_size, args.n_positions) == (4, 256, 8192, args.seq_len)
    with pytest.raises(SystemExit):
        parse_args(["--n-embd", "100", "--n-head", "3"])


# ----------------------------------------------------------------------------------------- checkpoints

def _state(value: float) -> dict:
    return {"model": {"w": torch.full((64,), value)}, "step": int(value), "rng": checkpoint.rng_state()}


def test_checkpoint_save_keeps_the_last_k_and_points_latest_at_the_newest(tmp_path):
    for step in (10, 20, 30, 40):
        checkpoint.save(tmp_path, _state(step), step, keep=2)
    assert [s for s, _ in checkpoint.list_checkpoints(tmp_path)] == [30, 40]
    assert (tmp_path / "latest").read_text().strip() == "step-00000040"
    latest = checkpoint.load_latest(tmp_path)
    assert latest.step == 40 and torch.equal(latest.state["model"]["w"], torch.full((64,), 40.0))
    checkpoint.set_rng_state(latest.state["rng"])  # python's state comes back as lists; must be accepted
    assert checkpoint.load_latest(tmp_path / "missing") is None


def test_partial_or_corrupt_checkpoints_never_become_latest(tmp_path):
    checkpoint.save(tmp_path, _state(10), 10)
    checkpoint.save(tmp_path, _state(20), 20)
    # A save that died before its rename: only a temp directory with half a file.
    (tmp_path / ".tmp-step-00000030-x").mkdir()
    (tmp_path / ".tmp-step-00000030-x" / "state.pt").write_bytes(b"PK\x03\x04 half")
    # A newer step directory without meta.json, and one whose state.pt was truncated after meta was written.
    (tmp_path / "step-00000040").mkdir()
    (tmp_path / "step-00000040" / "state.pt").write_bytes(b"garbage")
    checkpoint.save(tmp_path, _state(50), 50)
    state_file = tmp_path / "step-00000050" / "state.pt"
    state_file.write_bytes(state_file.read_bytes()[:100])
    assert checkpoint.load_latest(tmp_path).step == 20
    # The pointer naming a corrupt checkpoint falls back to the newest whole one.
    (tmp_path / "latest").write_text("step-00000050\n")
    assert checkpoint.load_latest(tmp_path).step == 20
    (tmp_path / "latest").write_text("not a checkpoint\n")
    assert checkpoint.load_latest(tmp_path).step == 20
    # The next save sweeps the crashed temp directory away.
    checkpoint.save(tmp_path, _state(60), 60, keep=10)
    assert not list(tmp_path.glob(".tmp-*")) and checkpoint.load_latest(tmp_path).step == 60


def test_process_killed_in_the_middle_of_a_save_leaves_the_previous_checkpoint_latest(tmp_path):
    checkpoint.save(tmp_path, _state(10), 10)
    # A real crash: the writer dies (no cleanup, no exception handlers) after writing part of the state.
    script = textwrap.dedent(f"""
        import os, torch
        from shipyard.workloads import checkpoint
        def dying_save(obj, f):
            f.write(b"PK" * 1000)
            f.flush()
            os._exit(137)
        torch.save = dying_save
        checkpoint.save({str(tmp_path)!r}, {{"step": 20}}, 20)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=120)
    assert result.returncode == 137, result.stderr.decode()
    assert list(tmp_path.glob(".tmp-step-00000020-*"))  # the half-written save is there...
    latest = checkpoint.load_latest(tmp_path)  # ...and ignored
    assert latest.step == 10 and (tmp_path / "latest").read_text().strip() == "step-00000010"


# ---------------------------------------------------------------------------- end to end, 2 DDP ranks

@pytest.fixture(scope="module")
def trained(module_launcher, tokenizer_cache, tmp_path_factory):
    """A complete 40-step run under torchrun ×2; its log and output directory are shared by two tests."""
    out = tmp_path_factory.mktemp("pretrained")
    args = tiny_args(tokenizer_cache, 40, **{"output-dir": out / "model", "checkpoint-dir": out / "ckpt",
                                             "checkpoint-every": 20, "eval-every": 20})
    proc, log = module_launcher.torchrun("torchrun", args)
    code = wait_exit(proc, log, timeout=240)
    text = log.read_text(errors="replace")
    assert code == 0, text[-4000:]
    return out, text


@pytest.mark.slow
def test_ddp_pretraining_lowers_the_loss(trained):
    out, text = trained
    assert "world size 2" in text
    losses = train_losses(text)
    assert sorted(losses) == list(range(1, 41))
    first, last = sum(losses[s] for s in (1, 2, 3)) / 3, sum(losses[s] for s in (38, 39, 40)) / 3
    assert last < first - 0.5, losses
    lines = progress_lines(text)
    assert all(p["tokens_per_second"] > 0 for p in lines if "loss" in p)
    evals = [p["eval_loss"] for p in lines if "eval_loss" in p]
    assert len(evals) == 2 and all(math.isfinite(e) for e in evals) and evals[-1] < losses[1]
    assert [s for s, _ in checkpoint.list_checkpoints(out / "ckpt")] == [20, 40]


@pytest.mark.slow
def test_output_dir_loads_with_auto_classes_and_generates(trained):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = trained[0] / "model"
    assert (model_dir / "model.safetensors").exists()
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert tok.chat_template and tok.eos_token == bpe.ENDOFTEXT and model.config.eos_token_id == tok.eos_token_id
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is a list?"}], add_generation_prompt=True,
                                     return_dict=True, return_tensors="pt")
    generated = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1]
    assert isinstance(tok.decode(generated[0]), str)


@pytest.mark.slow
def test_killed_rank_resumes_from_checkpoint_with_the_uninterrupted_losses(launcher, tokenizer_cache, tmp_path):
    # --steps far beyond what runs: no attempt can finish before the test kills or stops it, and every run
    # shares one learning-rate schedule. Runs end by SIGTERM, which must checkpoint and exit 143.
    def args(name):
        return tiny_args(tokenizer_cache, 1000, **{"output-dir": tmp_path / name / "model",
                                                   "checkpoint-dir": tmp_path / name / "ckpt",
                                                   "checkpoint-every": 10})

    def stop(ranks, at_step):
        wait_progress(ranks[0][1], at_step, ranks[0][0])
        for proc, _ in ranks:
            proc.send_signal(signal.SIGTERM)
        assert [wait_exit(p, log) for p, log in ranks] == [143, 143], ranks[0][1].read_text()[-3000:]
        text = ranks[0][1].read_text()
        last = max(train_losses(text))
        # The stop step was checkpointed (after the same step on both ranks), and is what `latest` names.
        assert f"checkpointed step {last}" in text
        return text

    ckpt = tmp_path / "run" / "ckpt"
    first = launcher.pretrain_gang("first", args("run"), SHIPYARD_RESTART_COUNT="0")
    wait_for(lambda: (ckpt / "latest").exists(), timeout=180, message="the first checkpoint")
    first[1][0].send_signal(signal.SIGKILL)  # rank 1 dies mid-run, without a chance to clean up
    assert first[1][0].wait(timeout=60) == -signal.SIGKILL
    # Rank 0 notices its peer is gone at the next collective and fails; it never hangs.
    assert wait_exit(*first[0], timeout=120) != 0
    killed_at = max(train_losses(first[0][1].read_text()))
    saved = checkpoint.load_latest(ckpt).step
    assert 10 <= saved <= killed_at

    second = launcher.pretrain_gang("second", args("run"), SHIPYARD_RESTART_COUNT="1")
    resumed_text = stop(second, saved + 12)
    match = re.search(r"resumed from checkpoint at step (\d+)", resumed_text)
    assert match and int(match.group(1)) == saved
    resumed = train_losses(resumed_text)
    assert min(resumed) == saved + 1

    reference = stop(launcher.pretrain_gang("reference", args("reference")), max(resumed))
    expected = train_losses(reference)
    for step, loss in {**train_losses(first[0][1].read_text()), **resumed}.items():
        assert loss == pytest.approx(expected[step], abs=1e-3, rel=1e-3), (step, loss, expected[step])

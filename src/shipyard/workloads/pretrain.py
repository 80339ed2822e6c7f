"""Pretrain a small GPT-2 style model from scratch on Python's own docs and sources, across ranks with DDP.

    torchrun --nproc-per-node 2 -m shipyard.workloads.pretrain --checkpoint-dir /ckpt/run1 --output-dir /models/run1
    python -m shipyard.workloads.pretrain --steps 100          # one process; or one per replica (MASTER_* env)

What it promises (docs/contracts.md): rank 0 prints `SHIPYARD_PROGRESS` lines; rank 0 writes atomic
checkpoints and every rank resumes from the same newest valid one; SIGTERM checkpoints and exits 143; the
result is a Hugging Face directory (safetensors + tokenizer with a chat template) that finetune and serve load
with `from_pretrained`. Every path is a flag, so the local runtime's volume-path substitution applies.

Resumption is exact: a batch is a pure function of (seed, data cursor, rank), the cursor and every RNG are in
the checkpoint, and with --deterministic (or on CPU with one thread per rank) a resumed run repeats the losses
of an uninterrupted one.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from shipyard.workloads import checkpoint, corpus, distributed, progress
from shipyard.workloads import tokenizer as bpe


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m shipyard.workloads.pretrain", description=__doc__.splitlines()[0])
    a = p.add_argument
    a("--output-dir", default="pretrained-model", help="final model + tokenizer (save_pretrained, safetensors)")
    a("--checkpoint-dir", default=None, help="where checkpoints go and resumption starts; unset: no checkpoints")
    a("--checkpoint-every", type=int, default=50, help="steps between checkpoints (0: only at the end/SIGTERM)")
    a("--keep-checkpoints", type=int, default=3)
    a("--steps", type=int, default=1000, help="total optimizer steps")
    a("--batch-size", type=int, default=8, help="sequences per rank per step")
    a("--seq-len", type=int, default=256)
    a("--lr", type=float, default=2e-3, help="peak learning rate")
    a("--min-lr-ratio", type=float, default=0.1, help="cosine decays to lr × this")
    a("--warmup-steps", type=int, default=30)
    a("--weight-decay", type=float, default=0.1)
    a("--grad-clip", type=float, default=1.0, help="max global grad norm (0: off)")
    a("--n-layer", type=int, default=4)
    a("--n-head", type=int, default=4)
    a("--n-embd", type=int, default=256)
    a("--n-positions", type=int, default=None, help="context length of the model (default: --seq-len)")
    a("--dropout", type=float, default=0.0)
    a("--vocab-size", type=int, default=bpe.DEFAULT_VOCAB_SIZE)
    a("--max-corpus-bytes", type=int, default=corpus.DEFAULT_MAX_BYTES)
    a("--validation-fraction", type=float, default=0.05)
    a("--tokenizer-dir", default=None, help="tokenizer cache (default: CHECKPOINT_DIR/tokenizer)")
    a("--seed", type=int, default=0)
    a("--log-every", type=int, default=10, help="steps between progress lines")
    a("--eval-every", type=int, default=0, help="steps between validation evals (0: only at the end)")
    a("--eval-batches", type=int, default=8, help="batches per rank per evaluation")
    a("--bf16", action=argparse.BooleanOptionalAction, default=None,
      help="bf16 autocast (default: on a GPU that supports it, off on CPU)")
    a("--deterministic", action="store_true", help="torch.use_deterministic_algorithms (slower on GPU)")
    a("--dist-timeout", type=float, default=600.0, help="seconds any collective may wait for a peer")
    args = p.parse_args(argv)
    args.n_positions = args.n_positions or args.seq_len
    if args.seq_len < 2 or args.seq_len > args.n_positions:
        p.error("--seq-len must be in 2..--n-positions")
    if args.n_embd % args.n_head:
        p.error("--n-embd must be a multiple of --n-head")
    if min(args.steps, args.batch_size, args.log_every) < 1:
        p.error("--steps, --batch-size and --log-every must be positive")
    return args


def log(env: distributed.DistEnv, message: str) -> None:
    if env.is_main:
        print(message, flush=True)


class TokenWindows:
    """Non-overlapping windows of seq_len+1 tokens from one stream, in a seeded order that changes per epoch.

    The data position is one integer, the cursor: how many windows the whole job has consumed. A step's
    global batch is windows [cursor, cursor + world × batch) and rank r reads its own contiguous part, so what
    a rank sees depends only on (seed, cursor, rank). Checkpointing the cursor resumes the stream exactly —
    even at another world size, which then only splits the same stream differently.
    """

    def __init__(self, tokens: torch.Tensor, seq_len: int, seed: int):
        self.tokens, self.seq_len, self.seed = tokens, seq_len, seed
        self.count = (len(tokens) - 1) // seq_len
        if self.count < 1:
            raise ValueError(f"{len(tokens)} tokens cannot fill one sequence of {seq_len}: raise --max-corpus-bytes")
        self._order: tuple[int, torch.Tensor] | None = None

    def _window(self, index: int) -> int:
        epoch, pos = divmod(index, self.count)
        if self._order is None or self._order[0] != epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._order = (epoch, torch.randperm(self.count, generator=gen))
        return int(self._order[1][pos])

    def batch(self, first: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.tensor([self._window(i) * self.seq_len for i in range(first, first + size)])
        chunk = self.tokens[starts[:, None] + torch.arange(self.seq_len + 1)].long()
        return chunk[:, :-1], chunk[:, 1:]


def prepare_data(args: argparse.Namespace, env: distributed.DistEnv, device: torch.device) -> dict:
    """Rank 0 loads the corpus, the (cached) tokenizer and token ids, then broadcasts the ids.

    Only rank 0 touches the corpus and the cache, so replicas on other nodes need no shared cache and never
    race to train the tokenizer; the broadcast doubles as the barrier that makes them wait for it.
    """
    meta, train_ids, val_ids, hf_tok = None, None, None, None
    if env.is_main:
        docs = corpus.load_documents(args.max_corpus_bytes)
        train_docs, val_docs = corpus.split(docs, args.validation_fraction)
        # The tokenizer and the cached ids depend on the corpus *and* on the split: key the cache on both.
        key = hashlib.sha256((corpus.fingerprint(train_docs) + corpus.fingerprint(val_docs)).encode()).hexdigest()
        root = args.tokenizer_dir or (os.path.join(args.checkpoint_dir, "tokenizer") if args.checkpoint_dir
                                      else os.path.expanduser("~/.cache/shipyard/tokenizers"))
        t0 = time.perf_counter()
        tok, cache = bpe.load_or_train(root, key, args.vocab_size, [d.text for d in train_docs])
        train_ids = torch.from_numpy(bpe.encode_cached(cache, "train", tok, [d.text for d in train_docs])
                                     .astype(np.int32))
        val_ids = torch.from_numpy(bpe.encode_cached(cache, "validation", tok, [d.text for d in val_docs])
                                   .astype(np.int32))
        hf_tok = bpe.to_transformers(tok, model_max_length=args.n_positions)
        meta = {"fingerprint": key, "vocab_size": len(hf_tok), "eos_id": hf_tok.eos_token_id,
                "pad_id": hf_tok.pad_token_id}
        log(env, f"corpus: {len(train_docs)}+{len(val_docs)} documents, {sum(d.nbytes for d in docs)} bytes, "
                 f"{len(train_ids)} train / {len(val_ids)} validation tokens, vocab {len(hf_tok)} "
                 f"(tokenizer {cache}, {time.perf_counter() - t0:.1f}s)")
    meta = distributed.broadcast_object(meta, 0, device)
    train_ids = distributed.broadcast_tensor(train_ids, 0, device)
    val_ids = distributed.broadcast_tensor(val_ids, 0, device)
    return {**meta, "train": train_ids, "val": val_ids, "tokenizer": hf_tok}


def build_model(args: argparse.Namespace, vocab_size: int, eos_id: int, pad_id: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=vocab_size, n_positions=args.n_positions, n_embd=args.n_embd,
                        n_layer=args.n_layer, n_head=args.n_head, resid_pdrop=args.dropout,
                        embd_pdrop=args.dropout, attn_pdrop=args.dropout, bos_token_id=eos_id,
                        eos_token_id=eos_id, pad_token_id=pad_id, tie_word_embeddings=True)
    model = GPT2LMHeadModel(config)
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = pad_id
    return model


def make_optimizer(model: torch.nn.Module, args: argparse.Namespace):
    # No weight decay on biases and LayerNorm gains: decaying them only hurts (the usual GPT recipe).
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    other = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": other, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))

    def factor(step: int) -> float:  # linear warmup, then cosine down to min_lr_ratio
        if step < args.warmup_steps:
            return (step + 1) / args.warmup_steps
        done = min(1.0, (step - args.warmup_steps) / max(1, args.steps - args.warmup_steps))
        return args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * done))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def resume(args, env, device, model, optimizer, scheduler, fingerprint: str) -> tuple[int, int]:
    """(step, cursor) of the newest valid checkpoint, loaded into model/optimizer/scheduler/RNG; (0, 0) if none.

    Rank 0 alone chooses (so no rank can pick a checkpoint another one does not see), then each rank loads
    that one; a rank that cannot read it (a checkpoint dir that is not shared) fails the whole gang loudly.
    """
    if not args.checkpoint_dir:
        return 0, 0
    found = checkpoint.load_latest(args.checkpoint_dir) if env.is_main else None
    name = distributed.broadcast_object(found.path.name if found else None, 0, device)
    if name is None:
        return 0, 0
    error, state = None, None
    try:
        state = found.state if env.is_main else checkpoint.load(Path(args.checkpoint_dir) / name)
    except Exception as exc:
        error = f"rank {env.rank}: {exc}"
    errors = [e for e in distributed.all_gather_object(error) if e]
    if errors:
        raise RuntimeError(f"cannot load checkpoint {name} on every rank (is {args.checkpoint_dir} shared?): {errors}")
    if state["fingerprint"] != fingerprint:
        raise RuntimeError(f"checkpoint {name} was trained on another corpus/tokenizer: keep --max-corpus-bytes, "
                           "--vocab-size and --validation-fraction, or use a new --checkpoint-dir")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rngs = state["rng"]  # one per rank; at another world size every rank takes rank 0's (dropout only)
    checkpoint.set_rng_state(rngs[env.rank] if len(rngs) == env.world_size else rngs[0])
    step, cursor = int(state["step"]), int(state["data"]["cursor"])
    log(env, f"resumed from checkpoint at step {step} ({name}, restart "
             f"{os.environ.get('SHIPYARD_RESTART_COUNT', '0')}, {cursor} sequences consumed)")
    return step, cursor


def save_checkpoint(args, env, device, model, optimizer, scheduler, step, cursor, fingerprint, wait: bool) -> None:
    rngs = distributed.all_gather_object(checkpoint.rng_state())  # collective: every rank calls this
    if env.is_main:
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "step": step, "rng": rngs,
                 "data": {"cursor": cursor, "seed": args.seed}, "fingerprint": fingerprint,
                 "config": model.config.to_dict()}
        checkpoint.save(args.checkpoint_dir, state, step, keep=args.keep_checkpoints)
    if wait:  # before exiting: peers must not leave (and get the gang torn down) while rank 0 still writes
        distributed.barrier(device)


@torch.no_grad()
def evaluate(model, val: torch.Tensor, args, env, device) -> float | None:
    """Mean token loss over the first windows of the validation stream, split round-robin across ranks."""
    count = (len(val) - 1) // args.seq_len
    if count < 1:
        return None
    n = min(count, args.eval_batches * args.batch_size * env.world_size)
    mine = list(range(env.rank, n, env.world_size))
    was_training = model.training
    model.eval()
    total = 0.0
    for i in range(0, len(mine), args.batch_size):
        starts = torch.tensor(mine[i:i + args.batch_size]) * args.seq_len
        chunk = val[starts[:, None] + torch.arange(args.seq_len + 1)].long().to(device)
        with distributed.autocast(device, args.bf16):
            logits = model(input_ids=chunk[:, :-1], use_cache=False).logits
        total += F.cross_entropy(logits.float().flatten(0, 1), chunk[:, 1:].flatten(), reduction="sum").item()
    model.train(was_training)
    loss_sum, tokens = distributed.all_reduce_sum([total, len(mine) * args.seq_len], device)
    return loss_sum / tokens


def save_final(model, hf_tokenizer, output_dir: str) -> None:
    """save_pretrained into a temp dir inside output_dir, then move file by file (each move is atomic).

    Not one rename of the directory: output_dir may itself be a volume's mount point, which cannot be
    replaced. config.json moves last, so a reader that sees it sees complete weights beside it.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a tqdm bar per save is noise in a pod log
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".tmp-save-"))
    model.save_pretrained(tmp)
    hf_tokenizer.save_pretrained(tmp)
    for name in sorted(os.listdir(tmp), key=lambda n: n == "config.json"):
        os.chmod(tmp / name, 0o644)  # some writers use 0600 temp files; serve may run as another user
        os.replace(tmp / name, out / name)
    tmp.rmdir()


def train(args, env: distributed.DistEnv, device: torch.device, stop: distributed.StopFlag) -> int:
    data = prepare_data(args, env, device)
    torch.manual_seed(args.seed)  # identical initial weights on every rank (DDP would broadcast them anyway)
    random.seed(args.seed)
    model = build_model(args, data["vocab_size"], data["eos_id"], data["pad_id"]).to(device)
    torch.manual_seed(args.seed + 1 + env.rank)  # then distinct streams per rank (dropout)
    random.seed(args.seed + 1 + env.rank)
    optimizer, scheduler = make_optimizer(model, args)
    step, cursor = resume(args, env, device, model, optimizer, scheduler, data["fingerprint"])
    ddp = model
    if env.distributed:
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    windows = TokenWindows(data["train"], args.seq_len, args.seed)
    tokens_per_step = args.batch_size * args.seq_len * env.world_size
    log(env, f"training {sum(p.numel() for p in model.parameters()):,} params on {device}, world size "
             f"{env.world_size}, {torch.get_num_threads()} threads per rank, {tokens_per_step} tokens per step, "
             f"steps {step + 1}..{args.steps}")

    model.train()
    window_start, window_steps, window_loss = time.perf_counter(), 0, 0.0
    last = {}  # the newest loss and rate: the final line repeats them (the controller keeps only the newest line)
    while step < args.steps:
        x, y = windows.batch(cursor + env.rank * args.batch_size, args.batch_size)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with distributed.autocast(device, args.bf16):
            logits = ddp(input_ids=x, use_cache=False).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        cursor += args.batch_size * env.world_size
        # One small all-reduce per step carries the loss (for reporting) and the stop vote, so a SIGTERM that
        # reached any rank stops every rank after this same step.
        loss_sum, votes = distributed.all_reduce_sum([loss.item(), float(stop.requested)], device)
        stopping = votes > 0
        window_steps += 1
        window_loss += loss_sum / env.world_size

        extra = {}
        if args.eval_every and step % args.eval_every == 0 and step < args.steps:
            extra["eval_loss"] = evaluate(model, data["val"], args, env, device)
        if step % args.log_every == 0 or step == args.steps or stopping or extra:
            elapsed = time.perf_counter() - window_start
            last = {"loss": window_loss / window_steps,
                    "tokens_per_second": window_steps * tokens_per_step / elapsed if elapsed > 0 else None}
            progress.report(step, args.steps, **last, lr=scheduler.get_last_lr()[0], epoch=cursor / windows.count,
                            **{k: v for k, v in extra.items() if v is not None})
            window_start, window_steps, window_loss = time.perf_counter(), 0, 0.0

        due = args.checkpoint_every > 0 and step % args.checkpoint_every == 0
        if args.checkpoint_dir and (due or stopping or step == args.steps):
            save_checkpoint(args, env, device, model, optimizer, scheduler, step, cursor, data["fingerprint"],
                            wait=stopping)
        if stopping:
            saved = f"checkpointed step {step}" if args.checkpoint_dir else f"no --checkpoint-dir, step {step} lost"
            log(env, f"signal {stop.signum or 'from a peer'}: {saved}, exiting")
            return 128 + (stop.signum or signal.SIGTERM)  # 143 for SIGTERM, as if it had killed us

    eval_loss = evaluate(model, data["val"], args, env, device)
    if eval_loss is not None:
        progress.report(step, args.steps, **last, eval_loss=eval_loss,
                        eval_perplexity=math.exp(min(eval_loss, 50.0)))
        log(env, f"eval loss {eval_loss:.4f} at step {step}")
    if env.is_main:
        save_final(model, data["tokenizer"], args.output_dir)
        log(env, f"saved model and tokenizer to {args.output_dir}")
    distributed.barrier(device)  # leave together, once rank 0's save is done
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = distributed.read_env()
    if args.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # must precede the first cuBLAS call
        torch.use_deterministic_algorithms(True, warn_only=True)
    distributed.configure_threads(env)
    device = distributed.choose_device(env)
    distributed.init(env, device, args.dist_timeout)
    stop = distributed.StopFlag().install()
    code = train(args, env, device, stop)
    # Only on a clean exit: after a peer died, tearing the group down can block; the process ends anyway.
    distributed.destroy()
    return code


if __name__ == "__main__":
    sys.exit(main())

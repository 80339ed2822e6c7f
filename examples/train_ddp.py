"""A small but real DDP training job: a character-level transformer trained on Python's own stdlib source.

Run it with `torchrun train_ddp.py` (torchrun reads PET_* from the environment) or as a plain
`python train_ddp.py` with MASTER_ADDR/MASTER_PORT/WORLD_SIZE/RANK set; without WORLD_SIZE (or with 1) it
trains in a single process. Nothing is downloaded, so it runs in an air-gapped pod.

Contract with Shipyard:
  * rank 0 prints `SHIPYARD_PROGRESS {json}` lines that the controller parses for status;
  * rank 0 checkpoints atomically to CHECKPOINT_DIR/latest.pt, and every rank resumes from it on start;
  * SIGTERM (pod deletion, drain) checkpoints and exits with 143;
  * --fail-at-step injects one deterministic crash on the first attempt (SHIPYARD_RESTART_COUNT=0).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import glob
import json
import os
import random
import signal
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

VOCAB = 128  # ASCII; anything else in the corpus becomes "?"
MAX_CONTEXT = 256  # fixed so a restart with another --seq-len still loads the checkpoint
STDLIB_FILES = ["argparse.py", "os.py", "textwrap.py", "shutil.py", "functools.py", "json/encoder.py"]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--checkpoint-dir", default="./checkpoints")
    p.add_argument("--checkpoint-every", type=int, default=25, help="0 disables periodic checkpoints")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch-size", type=int, default=8, help="sequences per rank per step")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=1, help="steps between progress lines")
    p.add_argument("--sleep-per-step", type=float, default=0.0, help="slow training down, for tests")
    p.add_argument("--fail-at-step", type=int, default=-1, help="crash at this step on the first attempt")
    args = p.parse_args()
    if not 1 < args.seq_len <= MAX_CONTEXT:
        p.error(f"--seq-len must be in 2..{MAX_CONTEXT}")
    return args


def load_corpus() -> torch.Tensor:
    # This file always exists; the stdlib sources may be stripped from slim images, so they are optional.
    paths = [os.path.abspath(__file__)]
    paths += [os.path.join(os.path.dirname(os.__file__), f) for f in STDLIB_FILES]
    text = ""
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                text += f.read() + "\n"
        except OSError:
            pass
    data = bytearray(text.encode("ascii", errors="replace"))
    return torch.frombuffer(data, dtype=torch.uint8).long()


class CharTransformer(nn.Module):
    def __init__(self, d_model: int = 128, layers: int = 2, heads: int = 4):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, d_model)
        self.pos = nn.Embedding(MAX_CONTEXT, d_model)
        # No dropout: the run is short, and it keeps the forward pass deterministic across restarts.
        block = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=2 * d_model, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, VOCAB)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        h = self.tok(x) + self.pos(torch.arange(t, device=x.device))
        mask = nn.Transformer.generate_square_subsequent_mask(t, device=x.device)
        return self.head(self.norm(self.blocks(h, mask=mask, is_causal=True)))


def get_batch(data: torch.Tensor, args, step: int, rank: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    # Seeded by (seed, step, rank), not by a running RNG: each rank sees a different shard, and a resumed
    # run sees exactly the batches the interrupted one would have.
    g = torch.Generator().manual_seed(args.seed * 1_000_003 + step * 1_009 + rank)
    starts = torch.randint(0, len(data) - args.seq_len - 1, (args.batch_size,), generator=g)
    offsets = torch.arange(args.seq_len + 1)
    chunk = data[starts[:, None] + offsets]
    return chunk[:, :-1].to(device), chunk[:, 1:].to(device)


def atomic_save(obj, path: str) -> None:
    # Write beside the target, fsync, then rename: a crash at any point leaves the old file intact.
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp's 0600 would hide checkpoints from other users
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)  # make the rename itself durable
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_checkpoint(args, model, optimizer, step: int, loss: float) -> None:
    atomic_save({
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "loss": loss,
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
    }, os.path.join(args.checkpoint_dir, "latest.pt"))


def main() -> int:
    args = parse_args()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    restart = int(os.environ.get("SHIPYARD_RESTART_COUNT", "0") or "0")
    distributed = world_size > 1
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if distributed:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://",
                                timeout=datetime.timedelta(seconds=120))
    else:
        rank = 0

    # The handler only sets a flag: stopping must happen between steps, at the same step on every rank.
    # Installed after the rendezvous, so a SIGTERM while waiting for peers still ends the process at once.
    stop = {"requested": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(requested=True))

    torch.manual_seed(args.seed)  # identical initial weights everywhere (DDP also broadcasts rank 0's)
    random.seed(args.seed)
    data = load_corpus()
    model = CharTransformer().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    os.makedirs(args.checkpoint_dir, exist_ok=True)
    latest = os.path.join(args.checkpoint_dir, "latest.pt")
    if rank == 0:  # temp files left by a writer that crashed mid-save
        for stale in glob.glob(os.path.join(args.checkpoint_dir, ".tmp-*.pt")):
            os.unlink(stale)

    # Every rank reads the shared checkpoint itself. Nothing writes it until the first step completes,
    # and that step needs every rank, so all of them read the same file.
    start_step, loss = 1, float("nan")
    if os.path.exists(latest):
        ckpt = torch.load(latest, map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        random.setstate(ckpt["rng"]["python"])
        start_step, loss = ckpt["step"] + 1, ckpt["loss"]
        if rank == 0:
            print(f"resumed from checkpoint at step {ckpt['step']} (restart {restart})", flush=True)
    if distributed:
        # A directory that is not really shared would give ranks different step counts, and the gang would
        # hang at the end waiting for each other; fail loudly now instead.
        steps = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world_size)]
        dist.all_gather(steps, torch.tensor([start_step], device=device))
        if len({int(s) for s in steps}) != 1:
            raise RuntimeError(f"ranks disagree on the resume step {[int(s) for s in steps]}: "
                               f"is {args.checkpoint_dir} shared by every replica?")
        device_ids = [local_rank] if device.type == "cuda" else None
        ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    else:
        ddp_model = model

    if rank == 0:
        n_params = sum(p.numel() for p in model.parameters())
        print(f"training {n_params} params on {len(data)} chars, world size {world_size}, "
              f"{torch.get_num_threads()} threads per rank", flush=True)
    fail_rank = 1 if distributed else 0
    # Throughput over the last few steps: smooth enough to read, recent enough to show a slowdown.
    step_ends = collections.deque([time.perf_counter()], maxlen=11)
    tokens_per_step = args.batch_size * args.seq_len * world_size
    window_steps, window_loss = 0, 0.0
    for step in range(start_step, args.steps + 1):
        if step == args.fail_at_step and restart == 0 and rank == fail_rank:
            print(f"rank {rank}: injected failure at step {step}", file=sys.stderr, flush=True)
            os._exit(3)  # like a real crash: no cleanup, no goodbye to the peers

        x, y = get_batch(data, args, step, rank, device)
        logits = ddp_model(x)
        step_loss = F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        step_loss.backward()
        optimizer.step()
        if args.sleep_per_step > 0:
            time.sleep(args.sleep_per_step)

        # One small all-reduce carries both the loss (for reporting) and the stop flag, so a SIGTERM that
        # reached any rank stops all of them after the same step.
        stats = torch.tensor([step_loss.item(), float(stop["requested"])], device=device)
        if distributed:
            dist.all_reduce(stats)
        loss = stats[0].item() / world_size
        stopping = stats[1].item() > 0
        step_ends.append(time.perf_counter())
        window_steps += 1
        window_loss += loss

        if rank == 0 and (step % args.log_every == 0 or step == args.steps or stopping):
            rate = (len(step_ends) - 1) * tokens_per_step / (step_ends[-1] - step_ends[0])
            print("SHIPYARD_PROGRESS " + json.dumps({
                "step": step, "total_steps": args.steps, "loss": round(window_loss / window_steps, 4),
                "tokens_per_second": round(rate, 1),
            }), flush=True)
            window_steps, window_loss = 0, 0.0

        checkpoint_due = args.checkpoint_every > 0 and step % args.checkpoint_every == 0
        if rank == 0 and (checkpoint_due or stopping or step == args.steps):
            save_checkpoint(args, model, optimizer, step, loss)
        if stopping:
            if rank == 0:
                print(f"SIGTERM: checkpointed step {step}, exiting", flush=True)
            if distributed:
                dist.barrier()  # peers wait for the save, so the restarted gang finds it complete
                dist.destroy_process_group()
            return 143

    if rank == 0:
        atomic_save(model.state_dict(), os.path.join(args.checkpoint_dir, "final.pt"))
        print(f"done: final loss {loss:.3f}", flush=True)
    if distributed:
        dist.barrier()  # leave together, once rank 0's final save is done
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""LoRA fine-tuning (peft) of a saved causal LM on a built-in instruction task, across ranks with DDP.

    python -m shipyard.workloads.finetune --base-model /models/run1 --output-dir /models/run1-ft
    torchrun --nproc-per-node 2 -m shipyard.workloads.finetune --base-model /models/run1 \\
        --output-dir /models/run1-ft --checkpoint-dir /ckpt/ft1

The base model is a Hugging Face directory with a chat template (what pretrain writes). The task comes from
`instructions` (no download): chat examples rendered with the tokenizer's template, loss on the assistant's
tokens only. Before training (step 0) and at every eval the held-out split is scored two ways: mean token loss
on the answers, and exact match of greedy generations. Outputs: OUTPUT/adapter (peft, safetensors),
OUTPUT/merged (adapter merged into the weights, with the tokenizer: loads as a plain model) and
OUTPUT/metrics.json, written last. Checkpoints, resumption, SIGTERM (checkpoint, exit 143) and progress lines
work as in pretrain (docs/contracts.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from shipyard.workloads import checkpoint, distributed, instructions, progress
from shipyard.workloads.pretrain import log, make_optimizer, save_final

PROG = "python -m shipyard.workloads.finetune"


class UsageError(Exception):
    """A bad flag or input: reported as one line on stderr, exit status 2, no traceback."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints the whole usage; one line says enough
        raise UsageError(message)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = _Parser(prog=PROG, description=__doc__.splitlines()[0])
    a = p.add_argument
    a("--base-model", required=True, help="directory of the model to fine-tune (save_pretrained + tokenizer)")
    a("--output-dir", required=True, help="gets adapter/, merged/ and metrics.json")
    a("--checkpoint-dir", default=None, help="where checkpoints go and resumption starts; unset: no checkpoints")
    a("--checkpoint-every", type=int, default=50, help="steps between checkpoints (0: only at the end/SIGTERM)")
    a("--keep-checkpoints", type=int, default=2)
    a("--task", default=instructions.DEFAULT_TASK, choices=sorted(instructions.TASKS))
    a("--train-examples", type=int, default=0, help="use the first N training examples (0: all)")
    a("--eval-examples", type=int, default=200, help="held-out examples scored at each eval (0: all)")
    a("--holdout-fraction", type=float, default=instructions.DEFAULT_HOLDOUT_FRACTION,
      help="share of modules held out (the split hashes module names)")
    a("--steps", type=int, default=300, help="total optimizer steps")
    a("--batch-size", type=int, default=16, help="examples per rank per step")
    a("--max-length", "--seq-len", dest="max_length", type=int, default=128,
      help="longest example in tokens; longer ones are dropped, never cut")
    a("--lr", type=float, default=5e-3, help="peak learning rate (LoRA takes larger ones than full training)")
    a("--min-lr-ratio", type=float, default=0.1, help="cosine decays to lr × this")
    a("--warmup-steps", type=int, default=20)
    a("--weight-decay", type=float, default=0.0)
    a("--grad-clip", type=float, default=1.0, help="max global grad norm (0: off)")
    a("--lora-r", type=int, default=8, help="LoRA rank")
    a("--lora-alpha", type=float, default=16.0)
    a("--lora-dropout", type=float, default=0.05)
    a("--target-modules", nargs="+", default=["c_attn"],
      help="module names to adapt (space or comma separated; default c_attn, GPT-2's attention projection)")
    a("--eval-every", type=int, default=100, help="steps between held-out evals (0: only before and after)")
    a("--max-new-tokens", type=int, default=32, help="generation budget per held-out answer")
    a("--seed", type=int, default=0)
    a("--log-every", type=int, default=10, help="steps between progress lines")
    a("--bf16", action=argparse.BooleanOptionalAction, default=None,
      help="bf16 autocast (default: on a GPU that supports it, off on CPU)")
    a("--dist-timeout", type=float, default=600.0, help="seconds any collective may wait for a peer")
    args = p.parse_args(argv)
    args.target_modules = sorted({m.strip() for item in args.target_modules for m in item.split(",") if m.strip()})
    if not args.target_modules:
        p.error("--target-modules needs at least one module name")
    if min(args.steps, args.batch_size, args.log_every, args.lora_r, args.max_new_tokens) < 1:
        p.error("--steps, --batch-size, --log-every, --lora-r and --max-new-tokens must be positive")
    if min(args.train_examples, args.eval_examples, args.eval_every, args.checkpoint_every, args.warmup_steps) < 0:
        p.error("--train-examples, --eval-examples, --eval-every, --checkpoint-every, --warmup-steps must be >= 0")
    if args.max_length < 8 or not 0 < args.holdout_fraction < 1:
        p.error("need --max-length >= 8 and 0 < --holdout-fraction < 1")
    if not 0 < args.lr < 1 or args.lora_alpha <= 0 or not 0 <= args.lora_dropout < 1:
        p.error("need 0 < --lr < 1, --lora-alpha > 0 and 0 <= --lora-dropout < 1")
    if not (Path(args.base_model) / "config.json").is_file():
        p.error(f"--base-model {args.base_model}: no config.json there (a directory written by pretrain?)")
    return args


# ------------------------------------------------------------------------------------------------- data

def encode(tok, examples: list[instructions.Example], max_length: int) -> list[dict]:
    """Token ids with labels only on the assistant's reply (its eos included); too-long examples are dropped."""
    # verbose=False: no warning about examples longer than the model's context; they are dropped below.
    enc = tok.apply_chat_template([e.messages() for e in examples], return_dict=True,
                                  return_assistant_tokens_mask=True, tokenizer_kwargs={"verbose": False})
    rows = []
    for e, ids, mask in zip(examples, enc["input_ids"], enc["assistant_masks"]):
        if len(ids) <= max_length and any(mask):
            rows.append({"example": e, "ids": ids, "labels": [i if m else -100 for i, m in zip(ids, mask)]})
    return rows


def collate(rows: list[dict], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-padded batch; pad positions get label -100 and attention 0."""
    width = max(len(r["ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["ids"])
        ids[i, :n], labels[i, :n], attention[i, :n] = torch.tensor(r["ids"]), torch.tensor(r["labels"]), 1
    return {"input_ids": ids.to(device), "labels": labels.to(device), "attention_mask": attention.to(device)}


class ExampleOrder:
    """A seeded permutation of the examples per epoch; a step's global batch is positions [cursor, cursor+n).

    As in pretrain's TokenWindows, the data position is one integer, so a checkpoint resumes it exactly.
    """

    def __init__(self, count: int, seed: int):
        self.count, self.seed = count, seed
        self._order: tuple[int, torch.Tensor] | None = None

    def indices(self, first: int, size: int) -> list[int]:
        out = []
        for i in range(first, first + size):
            epoch, pos = divmod(i, self.count)
            if self._order is None or self._order[0] != epoch:
                gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                self._order = (epoch, torch.randperm(self.count, generator=gen))
            out.append(int(self._order[1][pos]))
        return out


def token_loss(model, batch: dict[str, torch.Tensor], bf16: bool | None, device) -> tuple[torch.Tensor, int]:
    """(sum of next-token losses on labelled positions, how many there are)."""
    with distributed.autocast(device, bf16):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    targets = batch["labels"][:, 1:]
    loss = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), targets.flatten(), ignore_index=-100,
                           reduction="sum")
    return loss, int((targets != -100).sum())


# ------------------------------------------------------------------------------------------ evaluation

def context_length(config) -> int:  # GPT-2 calls it n_positions, most other models max_position_embeddings
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None) or 1 << 30


@torch.no_grad()
def generate_answers(model, tok, prompts: list[str], max_new_tokens: int, device, batch_size: int = 32
                     ) -> list[str]:
    """Greedy completions of chat prompts (left-padded batches), decoded without special tokens."""
    out = []
    for i in range(0, len(prompts), batch_size):
        chats = [[{"role": "user", "content": p}] for p in prompts[i:i + batch_size]]
        texts = tok.apply_chat_template(chats, add_generation_prompt=True, tokenize=False)
        enc = tok(texts, add_special_tokens=False, padding=True, padding_side="left", return_tensors="pt").to(device)
        # Never past the model's context: GPT-2's learned positions end at n_positions.
        budget = min(max_new_tokens, context_length(model.config) - enc["input_ids"].shape[1])
        if budget < 1:
            out += [""] * len(chats)
            continue
        generated = model.generate(**enc, max_new_tokens=budget, do_sample=False,
                                   eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        out += tok.batch_decode(generated[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return out


@torch.no_grad()
def evaluate(model, tok, rows: list[dict], args, env, device) -> dict:
    """Held-out answer loss and exact match, each rank scoring every world_size-th example, summed over ranks."""
    mine = rows[env.rank::env.world_size]
    was_training = model.training
    model.eval()
    losses = [token_loss(model, collate(mine[i:i + args.batch_size], tok.pad_token_id, device), args.bf16, device)
              for i in range(0, len(mine), args.batch_size)]
    loss_sum, tokens = sum(loss.item() for loss, _ in losses), sum(n for _, n in losses)
    with distributed.autocast(device, args.bf16):
        predictions = generate_answers(model, tok, [r["example"].prompt for r in mine], args.max_new_tokens, device)
    model.train(was_training)
    kinds = list(instructions.QUESTIONS)  # exact match per question kind too: [correct, count] for each
    per_kind = [0.0] * (2 * len(kinds))
    for p, r in zip(predictions, mine):
        k = kinds.index(r["example"].question)
        per_kind[2 * k] += instructions.exact_match(p, r["example"].answer)
        per_kind[2 * k + 1] += 1
    loss_sum, tokens, *per_kind = distributed.all_reduce_sum([loss_sum, tokens, *per_kind], device)
    correct, count = sum(per_kind[0::2]), sum(per_kind[1::2])
    samples = [{"prompt": r["example"].prompt, "answer": r["example"].answer, "prediction": p}
               for r, p in zip(mine[:6], predictions[:6])]
    return {"eval_loss": loss_sum / max(tokens, 1), "exact_match": correct / max(count, 1),
            "exact_match_by_question": {k: per_kind[2 * i] / per_kind[2 * i + 1]
                                        for i, k in enumerate(kinds) if per_kind[2 * i + 1]},
            "eval_examples": int(count), "samples": samples}


def eval_metrics(result: dict) -> dict[str, float]:
    """The numbers of an evaluation for a progress line: eval_loss, exact_match, exact_match_<question>."""
    return {"eval_loss": result["eval_loss"], "exact_match": result["exact_match"],
            **{f"exact_match_{k}": v for k, v in result["exact_match_by_question"].items()}}


# ------------------------------------------------------------------------------------- model and state

def load_base(args, device):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(args.base_model)
    if not tok.chat_template or tok.eos_token_id is None or tok.pad_token_id is None:
        raise UsageError(f"--base-model {args.base_model}: the tokenizer needs a chat template, eos and pad tokens")
    model = AutoModelForCausalLM.from_pretrained(args.base_model).to(device)
    return tok, model


def add_lora(model, args):
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [m for m in args.target_modules if m not in names]
    if missing:
        raise UsageError(f"--target-modules {', '.join(missing)} not in the model (it has e.g. "
                         f"{', '.join(sorted(n for n in names if n and not n.isdigit())[:8])})")
    # GPT-2's projections are Conv1D (weights stored transposed): peft must know, or the merge is wrong.
    conv = any(isinstance(m, Conv1D) for n, m in model.named_modules() if n.rsplit(".", 1)[-1] in args.target_modules)
    config = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                        target_modules=args.target_modules, fan_in_fan_out=conv, bias="none", task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # peft calls a transformers API that warns of its own deprecation
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        return get_peft_model(model, config)


def base_fingerprint(directory: str) -> str:
    """sha256 of the base model's config and weight files: a checkpoint is only resumed onto the same base."""
    h = hashlib.sha256()
    for path in sorted(Path(directory).iterdir()):
        if path.name == "config.json" or path.suffix in (".safetensors", ".bin"):
            h.update(path.name.encode())
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


def resume(args, env, device, model, optimizer, scheduler, fingerprint: str) -> dict | None:
    """The newest valid checkpoint's training state, loaded into the adapter/optimizer/scheduler/RNG, or None."""
    from peft import set_peft_model_state_dict

    if not args.checkpoint_dir:
        return None
    found = checkpoint.load_latest(args.checkpoint_dir) if env.is_main else None
    name = distributed.broadcast_object(found.path.name if found else None, 0, device)
    if name is None:
        return None
    error, state = None, None
    try:
        state = found.state if env.is_main else checkpoint.load(Path(args.checkpoint_dir) / name)
    except Exception as exc:
        error = f"rank {env.rank}: {exc}"
    errors = [e for e in distributed.all_gather_object(error) if e]
    if errors:
        raise RuntimeError(f"cannot load checkpoint {name} on every rank (is {args.checkpoint_dir} shared?): {errors}")
    if state.get("fingerprint") != fingerprint:
        raise UsageError(f"checkpoint {name} in {args.checkpoint_dir} belongs to another base model, task or LoRA "
                         "configuration: use a new --checkpoint-dir")
    set_peft_model_state_dict(model, state["adapter"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rngs = state["rng"]
    checkpoint.set_rng_state(rngs[env.rank] if len(rngs) == env.world_size else rngs[0])
    log(env, f"resumed from checkpoint at step {state['step']} ({name}, restart "
             f"{os.environ.get('SHIPYARD_RESTART_COUNT', '0')}, {state['cursor']} examples consumed)")
    return state


def save_checkpoint(args, env, device, model, optimizer, scheduler, state: dict, wait: bool) -> None:
    from peft import get_peft_model_state_dict

    rngs = distributed.all_gather_object(checkpoint.rng_state())  # collective: every rank calls this
    if env.is_main:
        checkpoint.save(args.checkpoint_dir, {**state, "adapter": get_peft_model_state_dict(model),
                                              "optimizer": optimizer.state_dict(),
                                              "scheduler": scheduler.state_dict(), "rng": rngs},
                        state["step"], keep=args.keep_checkpoints)
    if wait:
        distributed.barrier(device)


def write_outputs(model, tok, args, metrics: dict) -> None:
    """adapter/, then merged/, then metrics.json (last: its presence means the other two are complete)."""
    out = Path(args.output_dir)
    save_final(model, tok, str(out / "adapter"))
    save_final(model.merge_and_unload(), tok, str(out / "merged"))
    checkpoint.atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1) + "\n")


# ---------------------------------------------------------------------------------------------- training

def train(args, env: distributed.DistEnv, device: torch.device, stop: distributed.StopFlag) -> int:
    tok, model = load_base(args, device)
    torch.manual_seed(args.seed)  # identical LoRA init on every rank (DDP would broadcast it anyway)
    random.seed(args.seed)
    model = add_lora(model, args).to(device)  # first: a wrong --target-modules fails before any other work
    torch.manual_seed(args.seed + 1 + env.rank)  # then distinct streams per rank (LoRA dropout)
    train_ex, held_ex = instructions.split(instructions.build(args.task), args.holdout_fraction)
    if args.train_examples:
        train_ex = train_ex[:args.train_examples]
    args.max_length = min(args.max_length, context_length(model.config))  # the model's positions end there
    train_rows = encode(tok, train_ex, args.max_length)
    eval_rows = encode(tok, held_ex, args.max_length)[:args.eval_examples or None]
    if not train_rows or not eval_rows:
        raise UsageError(f"no examples fit --max-length {args.max_length}")
    fingerprint = hashlib.sha256(json.dumps(
        [base_fingerprint(args.base_model) if env.is_main else None, instructions.fingerprint(train_ex),
         args.task, args.holdout_fraction, args.max_length, args.lora_r, args.lora_alpha, args.target_modules]
    ).encode()).hexdigest()
    fingerprint = distributed.broadcast_object(fingerprint, 0, device)  # rank 0 alone hashes the weights

    optimizer, scheduler = make_optimizer(model, args)
    trainable, total = model.get_nb_trainable_parameters()
    state = resume(args, env, device, model, optimizer, scheduler, fingerprint)
    step, cursor = (state["step"], state["cursor"]) if state else (0, 0)
    base = state["base"] if state else None
    ddp = model
    if env.distributed:
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    log(env, f"task {args.task}: {len(train_rows)} train / {len(eval_rows)} held-out examples scored "
             f"(of {len(held_ex)} held out); LoRA r={args.lora_r} on {', '.join(args.target_modules)}: "
             f"{trainable:,} of {total:,} params trainable, world size {env.world_size}, "
             f"steps {step + 1}..{args.steps}")
    if base is None:  # step 0: the base model itself (an unmerged adapter with B = 0 is the identity)
        with model.disable_adapter():
            base = evaluate(model, tok, eval_rows, args, env, device)
        progress.report(0, args.steps, **eval_metrics(base))

    order = ExampleOrder(len(train_rows), args.seed)
    model.train()
    window_start, window_steps, window_loss, window_tokens = time.perf_counter(), 0, 0.0, 0.0
    last: dict = {}
    run_tokens, run_seconds = 0.0, 0.0  # this process's training throughput, evaluations excluded
    while step < args.steps:
        batch_rows = [train_rows[i] for i in order.indices(cursor + env.rank * args.batch_size, args.batch_size)]
        batch = collate(batch_rows, tok.pad_token_id, device)
        loss_sum, count = token_loss(ddp, batch, args.bf16, device)
        loss = loss_sum / max(count, 1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], args.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        cursor += args.batch_size * env.world_size
        # One all-reduce per step: the loss, the tokens processed and the stop vote (see pretrain).
        loss_all, tokens_all, votes = distributed.all_reduce_sum(
            [loss.item(), float(batch["attention_mask"].sum()), float(stop.requested)], device)
        stopping = votes > 0
        window_steps, window_loss, window_tokens = window_steps + 1, window_loss + loss_all / env.world_size, \
            window_tokens + tokens_all

        extra, train_end = {}, time.perf_counter()
        if args.eval_every and step % args.eval_every == 0 and step < args.steps and not stopping:
            extra = eval_metrics(evaluate(model, tok, eval_rows, args, env, device))
        if step % args.log_every == 0 or step == args.steps or stopping or extra:
            elapsed = train_end - window_start
            run_tokens, run_seconds = run_tokens + window_tokens, run_seconds + elapsed
            last = {"loss": window_loss / window_steps,
                    "tokens_per_second": window_tokens / elapsed if elapsed > 0 else None}
            progress.report(step, args.steps, **last, lr=scheduler.get_last_lr()[0], **extra)
            window_start, window_steps, window_loss, window_tokens = time.perf_counter(), 0, 0.0, 0.0

        due = args.checkpoint_every > 0 and step % args.checkpoint_every == 0
        if args.checkpoint_dir and (due or stopping or step == args.steps):
            save_checkpoint(args, env, device, model, optimizer, scheduler,
                            {"step": step, "cursor": cursor, "base": base, "fingerprint": fingerprint}, wait=stopping)
        if stopping:
            saved = f"checkpointed step {step}" if args.checkpoint_dir else f"no --checkpoint-dir, step {step} lost"
            log(env, f"signal {stop.signum or 'from a peer'}: {saved}, exiting")
            return 128 + (stop.signum or signal.SIGTERM)

    final = evaluate(model, tok, eval_rows, args, env, device)
    progress.report(step, args.steps, **last, **eval_metrics(final), base_eval_loss=base["eval_loss"],
                    base_exact_match=base["exact_match"])
    log(env, f"held-out exact match {base['exact_match']:.3f} -> {final['exact_match']:.3f}, eval loss "
             f"{base['eval_loss']:.4f} -> {final['eval_loss']:.4f} ({final['eval_examples']} examples, step {step})")
    if env.is_main:
        metrics = {"task": args.task, "steps": step, "base": base, "final": final,
                   "train_examples": len(train_rows), "held_out_examples": len(held_ex),
                   "trainable_parameters": trainable,
                   "tokens_per_second": run_tokens / run_seconds if run_seconds > 0 else None,
                   "world_size": env.world_size, "hyperparameters": vars(args)}
        write_outputs(model, tok, args, metrics)
        log(env, f"saved adapter, merged model and metrics to {args.output_dir}")
    distributed.barrier(device)
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        env = distributed.read_env()
        distributed.configure_threads(env)
        device = distributed.choose_device(env)
        distributed.init(env, device, args.dist_timeout)
        stop = distributed.StopFlag().install()
        code = train(args, env, device, stop)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr, flush=True)
        return 2
    distributed.destroy()
    return code


if __name__ == "__main__":
    sys.exit(main())

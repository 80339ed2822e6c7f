"""A byte-level BPE trained on the corpus, cached on disk, handed out as a Hugging Face tokenizer.

Byte-level (GPT-2 style) so any text encodes without an unknown token. Training takes seconds, but every
rank, restart and job would repeat it, so the result is cached under a key of corpus fingerprint + vocab
size. The cache is written atomically under an exclusive file lock: two jobs (or ranks) sharing a volume
never see a half-written file, and only one of them trains. Training is deterministic besides, so a cache
that is lost reproduces the same tokenizer.

The special tokens are fixed here, once, because finetune and serve depend on them: `<|endoftext|>`
separates documents and ends every chat turn (so generation stops at eos without extra stop tokens),
`<|pad|>` pads, and the role tokens open turns in CHAT_TEMPLATE. The template marks assistant turns with
`{% generation %}` so `apply_chat_template(..., return_assistant_tokens_mask=True)` can mask the loss of
everything but the replies when fine-tuning.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

ENDOFTEXT = "<|endoftext|>"
PAD = "<|pad|>"
SYSTEM, USER, ASSISTANT = "<|system|>", "<|user|>", "<|assistant|>"
SPECIAL_TOKENS = [ENDOFTEXT, PAD, SYSTEM, USER, ASSISTANT]  # ids 0..4, in this order
DEFAULT_VOCAB_SIZE = 8192
TOKENIZER_FILE = "tokenizer.json"

# <|user|>\nHello<|endoftext|><|assistant|>\nHi!<|endoftext|>  — roles other than these three are an error.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{ raise_exception('unknown chat role: ' + message['role']) }}"
    "{%- endif -%}"
    "{{ '<|' + message['role'] + '|>\\n' }}"
    "{%- if message['role'] == 'assistant' -%}"
    "{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
    "{%- else -%}"
    "{{ message['content'] + eos_token }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>\\n' }}{%- endif -%}"
)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive flock on `path` (created if missing), released when the block ends or the process dies."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            # Some network filesystems refuse flock (ENOLCK). Go on unlocked: writes stay atomic, so the worst
            # case is two writers producing the same (deterministic) file.
            pass
        yield
    finally:
        os.close(fd)  # closing drops the lock


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def train_bpe(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE) -> Tokenizer:
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be at least {256 + len(SPECIAL_TOKENS)} (bytes + special tokens)")
    tok = Tokenizer(models.BPE())
    # add_prefix_space=False: code is whitespace-sensitive, and encode(decode(ids)) should round-trip.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok


def cache_dir_for(cache_root: str | os.PathLike, corpus_fingerprint: str, vocab_size: int) -> Path:
    return Path(cache_root) / f"bpe-{vocab_size}-{corpus_fingerprint[:16]}"


def load_or_train(cache_root: str | os.PathLike, corpus_fingerprint: str, vocab_size: int,
                  texts: Iterable[str]) -> tuple[Tokenizer, Path]:
    """The cached tokenizer for this corpus and vocab size, training (and caching) it if needed.

    Returns the tokenizer and its cache directory (which `encode_cached` also uses for token ids).
    """
    directory = cache_dir_for(cache_root, corpus_fingerprint, vocab_size)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / TOKENIZER_FILE
    with file_lock(directory / ".lock"):
        if path.exists():
            try:
                return Tokenizer.from_file(str(path)), directory
            except Exception:  # unreadable (written by another tokenizers version?): train it again
                pass
        tok = train_bpe(texts, vocab_size)
        atomic_write_bytes(path, tok.to_str().encode())
    return tok, directory


def encode_documents(tok: Tokenizer, texts: list[str]) -> np.ndarray:
    """One token stream: every document followed by <|endoftext|>, as the smallest integer dtype that fits."""
    eos = tok.token_to_id(ENDOFTEXT)
    ids: list[int] = []
    for enc in tok.encode_batch(texts, add_special_tokens=False):
        ids.extend(enc.ids)
        ids.append(eos)
    dtype = np.uint16 if tok.get_vocab_size() <= 2**16 else np.int32
    return np.asarray(ids, dtype=dtype)


def encode_cached(directory: str | os.PathLike, name: str, tok: Tokenizer, texts: list[str]) -> np.ndarray:
    """`encode_documents`, cached as `<directory>/<name>.npy` (the directory is keyed by corpus + vocab)."""
    path = Path(directory) / f"{name}.npy"
    with file_lock(Path(directory) / ".lock"):
        if path.exists():
            try:
                return np.load(path, allow_pickle=False)
            except (OSError, ValueError):
                pass
        ids = encode_documents(tok, texts)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".tmp-{name}-", suffix=".npy")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, ids, allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return ids


def to_transformers(tok: Tokenizer, model_max_length: int | None = None):
    """Wrap as a `PreTrainedTokenizerFast` with eos/bos/pad and the chat template set.

    `save_pretrained` on the result writes everything serve and finetune need next to the model; nothing
    about the special tokens has to be passed around separately.
    """
    from transformers import PreTrainedTokenizerFast  # the import costs seconds; only callers that need it pay

    kwargs = {"model_max_length": model_max_length} if model_max_length else {}
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=ENDOFTEXT, bos_token=ENDOFTEXT,
                                 unk_token=None, pad_token=PAD, padding_side="right", **kwargs)
    hf.add_special_tokens({"additional_special_tokens": [SYSTEM, USER, ASSISTANT]})
    hf.chat_template = CHAT_TEMPLATE
    return hf

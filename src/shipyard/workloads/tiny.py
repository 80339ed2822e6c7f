"""A tiny servable model built offline in about a second: for smoke tests, benchmarks and trying the serving path
without a trained model.

A byte-level BPE trained on a few standard-library sources, wrapped as a PreTrainedTokenizerFast with eos/pad
and a chat template (with the `{% generation %}` markers the finetune workload needs), and a random-init
GPT2LMHeadModel. Its weights are initialised wide (initializer_range 0.3) so that greedy decoding wanders over
the vocabulary instead of repeating one token. Independent of `workloads.tokenizer` on purpose: code tested
with it must not rely on Shipyard's own tokenizer.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

EOT = "<|endoftext|>"
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{ raise_exception('unknown chat role: ' + message['role']) }}"
    "{%- endif -%}"
    "{{ '<|' + message['role'] + '|>\\n' }}"
    "{%- if message['role'] == 'assistant' -%}"
    "{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
    "{%- else -%}{{ message['content'] + eos_token }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>\\n' }}{%- endif -%}"
)


def build_tiny_model(out: Path, *, layers: int = 2, width: int = 64, vocab: int = 384, positions: int = 256,
                     initializer_range: float = 0.3) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    corpus = [str(stdlib / name) for name in ("textwrap.py", "string.py", "shlex.py", "fnmatch.py")]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = [EOT, "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>"]
    tok.train(corpus, trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials, show_progress=False,
                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOT, bos_token=EOT, pad_token="<|pad|>")
    hf_tok.chat_template = CHAT_TEMPLATE
    hf_tok.save_pretrained(out)

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(hf_tok), n_positions=positions, n_embd=width, n_layer=layers, n_head=4,
                        eos_token_id=hf_tok.eos_token_id, bos_token_id=hf_tok.eos_token_id,
                        pad_token_id=hf_tok.pad_token_id, initializer_range=initializer_range)
    model = GPT2LMHeadModel(config)
    model.generation_config.eos_token_id = hf_tok.eos_token_id
    model.save_pretrained(out)
    return out

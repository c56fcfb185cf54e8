"""Test helpers: the params defaults every test starts from, and a tiny LLM the tests build.

Tests take their settings from params.yaml through config.Settings (the one source of every
default) and change only what a test needs: ``DEFAULTS.train(steps=2)``.
"""
from pathlib import Path
from typing import Iterable

import torch

from videonarrator.config import Settings
from videonarrator.io import atomic_path

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = Settings.load(ROOT / "params.yaml")

EOS = "<|im_end|>"


def make_tiny_llm(out_dir: str | Path, corpus: Iterable[str], hidden: int = 32, layers: int = 2,
                  heads: int = 4, vocab_size: int = 384, seed: int = 0,
                  extra_special: tuple[str, ...] = ()) -> Path:
    """Write a random tiny ``LlamaForCausalLM`` and a byte-level BPE tokenizer trained on ``corpus``.

    Byte-level, so any text (Chinese too) encodes; ``<|im_end|>`` is both eos
    and pad, as in SmolLM2; ``extra_special`` adds special tokens such as
    SmolLM2's ``<|im_start|>``.  Takes well under a second.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, *extra_special],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(list(corpus), trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS, pad_token=EOS,
                                        additional_special_tokens=list(extra_special))
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads // 2,
                         max_position_embeddings=2048, eos_token_id=eos_id, pad_token_id=eos_id,
                         bos_token_id=None, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out_dir

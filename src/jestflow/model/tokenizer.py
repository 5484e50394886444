"""An offline word-level tokenizer built from the captions themselves (no downloads)."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable

import torch

from .. import storage

PAD, UNK, EOS = "<pad>", "<unk>", "<eos>"
_WORD = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*|[^\sa-z0-9]")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class Tokenizer:
    def __init__(self, vocab: list[str], context_length: int):
        if vocab[:3] != [PAD, UNK, EOS]:
            raise ValueError("tokenizer vocab must start with <pad>, <unk>, <eos>")
        self.vocab, self.context_length = vocab, context_length
        self.ids = {w: i for i, w in enumerate(vocab)}
        self.pad_id, self.eos_id = 0, 2  # what a hf-siglip learner given this tokenizer is told

    @classmethod
    def build(cls, texts: Iterable[str], context_length: int, max_size: int = 4096, min_count: int = 1) -> Tokenizer:
        counts = Counter(w for t in texts for w in words(t))
        common = [w for w, c in counts.most_common(max_size - 3) if c >= min_count]
        return cls([PAD, UNK, EOS, *sorted(common)], context_length)

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Token ids, B x context_length: words, then EOS, then padding (truncated to fit)."""
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = [self.ids.get(w, 1) for w in words(t)][: self.context_length - 1] + [2]
            out[i, : len(ids)] = torch.tensor(ids)
        return out

    def save(self, uri: str) -> None:
        storage.write_json(uri, {"vocab": self.vocab, "context_length": self.context_length})

    @classmethod
    def load(cls, uri: str) -> Tokenizer:
        d = storage.read_json(uri)
        return cls(d["vocab"], d["context_length"])

    def __len__(self) -> int:
        return len(self.vocab)


class HFTokenizer:
    """A Hugging Face `tokenizers` tokenizer with jestflow's interface: `encode` gives B x
    context_length ids, padded (right, with its pad id) and truncated to a fixed length, as SigLIP's
    text tower expects (it pools the last position, with no attention mask). The fixed length and pad id
    live in the tokenizer's own JSON, so its `tokenizer.json` is complete on its own: a score cache copies
    it like the word-level one, and `PreTrainedTokenizerFast(tokenizer_file=...)` loads it."""

    def __init__(self, tok):
        padding = tok.padding or {}
        if not padding.get("length"):
            raise ValueError(
                "a Hugging Face tokenizer for jestflow needs fixed-length padding (enable_padding(length=...))"
            )
        self.tok = tok
        self.context_length = int(padding["length"])
        self.pad_id = int(padding["pad_id"])
        self.eos_id = tok.token_to_id(EOS)

    @classmethod
    def build(cls, texts: Iterable[str], context_length: int, vocab_size: int = 4096) -> HFTokenizer:
        """Byte-level BPE trained on `texts` (no downloads; every byte is in the alphabet, so no caption
        has unknown tokens), an end-of-sequence token appended, padded to `context_length`."""
        from tokenizers import Tokenizer as HFTok
        from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

        tok = HFTok(models.BPE())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[PAD, EOS],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer)
        tok.post_processor = processors.TemplateProcessing(
            single=f"$A {EOS}", special_tokens=[(EOS, tok.token_to_id(EOS))]
        )
        return cls.configure(tok, context_length)

    @classmethod
    def configure(cls, tok, context_length: int, pad_token: str = PAD) -> HFTokenizer:
        """`tok` truncating and padding to `context_length` (a pretrained model's own tokenizer, say)."""
        pad_id = tok.token_to_id(pad_token)
        if pad_id is None:
            raise ValueError(f"the tokenizer has no pad token {pad_token!r}")
        tok.enable_truncation(context_length)
        tok.enable_padding(length=context_length, pad_id=pad_id, pad_token=pad_token)
        return cls(tok)

    def with_length(self, context_length: int) -> HFTokenizer:
        """The same tokenizer padded and truncated to `context_length`."""
        from tokenizers import Tokenizer as HFTok

        tok = HFTok.from_str(self.tok.to_str())
        pad = tok.padding["pad_token"]
        tok.no_padding()
        tok.no_truncation()
        return HFTokenizer.configure(tok, context_length, pad)

    def encode(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([e.ids for e in self.tok.encode_batch(list(texts))], dtype=torch.long).reshape(
            len(texts), self.context_length
        )

    def save(self, uri: str) -> None:
        storage.write_bytes(uri, self.tok.to_str().encode())

    def transformers_config(self) -> bytes:
        """tokenizer_config.json, as transformers' own `save_pretrained` writes it for this tokenizer (its pad
        and end tokens, its context length): beside `tokenizer.json` it makes the folder loadable with
        `AutoTokenizer.from_pretrained`, like any checkpoint on a model hub."""
        from tokenizers import Tokenizer as HFTok
        from transformers import PreTrainedTokenizerFast

        plain = HFTok.from_str(self.tok.to_str())
        plain.no_padding()  # callers choose: SigLIP's own recipe is padding="max_length", truncation=True
        plain.no_truncation()
        eos = {"eos_token": EOS} if self.eos_id is not None else {}
        wrapped = PreTrainedTokenizerFast(tokenizer_object=plain, pad_token=plain.id_to_token(self.pad_id),
                                          model_max_length=self.context_length, **eos)  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            wrapped.save_pretrained(tmp)
            with open(os.path.join(tmp, "tokenizer_config.json"), "rb") as f:
                return f.read()

    def __len__(self) -> int:
        return self.tok.get_vocab_size()


def load_tokenizer(uri: str) -> Tokenizer | HFTokenizer:
    """Either kind of tokenizer.json: jestflow's word-level one or a Hugging Face `tokenizers` file."""
    d = storage.read_json(uri)
    if "vocab" in d and "context_length" in d:
        return Tokenizer(d["vocab"], d["context_length"])
    if "model" in d and "version" in d:
        from tokenizers import Tokenizer as HFTok

        return HFTokenizer(HFTok.from_str(json.dumps(d)))
    raise ValueError(f"{uri}: neither a jestflow nor a Hugging Face tokenizer file")


def build_tokenizer(arch: str, texts: Iterable[str], context_length: int) -> Tokenizer | HFTokenizer:
    """The tokenizer a model of `arch` trained from scratch gets, built from `texts` (the curated captions)."""
    if arch == "hf-siglip":
        return HFTokenizer.build(texts, context_length)
    return Tokenizer.build(texts, context_length)

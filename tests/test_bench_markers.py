"""docs/benchmarks.md's generated regions: a bench's `--write` (cache_bench, retrieval_bench)
replaces what lies between its `<!-- NAME:start -->` and `<!-- NAME:end -->` markers, so those
must enclose only the section it writes. A marker left above other sections (stream-bench's
sat above two Cache sections) would have a writer replace them."""

from __future__ import annotations

import re

from tests.harness.processes import REPO

DOC = REPO / "docs" / "benchmarks.md"


def test_each_marked_region_holds_at_most_its_own_section_heading():
    text = DOC.read_text()
    names = re.findall(r"^<!-- ([a-z-]+):start -->$", text, flags=re.M)
    assert {"cache-bench", "stream-bench", "retrieval-bench"} <= set(names)
    assert len(names) == len(set(names)), names
    for name in names:
        region = re.search(
            rf"^<!-- {name}:start -->\n(.*?)^<!-- {name}:end -->$", text, flags=re.M | re.S
        )
        assert region is not None, f"{name}: no end marker after its start"
        headings = re.findall(r"^## .*$", region.group(1), flags=re.M)
        # The writer's own heading, if it writes one, is the region's first line.
        assert headings in ([], [region.group(1).split("\n", 1)[0]]), (name, headings)

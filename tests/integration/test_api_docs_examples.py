"""docs/api.md's Python examples, run as written on a fresh install (no model rows, the
bundled local model as default): only the address and the API key are this Daphne's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.harness.embedded import running_parley

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def python_examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_docs_have_examples_for_every_surface():
    text = "\n".join(python_examples())
    for needed in ("chat.completions.create", "ChatOpenAI", "embeddings.create", "/messages"):
        assert needed in text


@pytest.mark.timeout(300)
def test_the_python_examples_in_api_md_run_on_a_fresh_install(tmp_path, capsys):
    with running_parley(
        tmp_path, LLM_DEFAULT_PROVIDER="local", LLM_DEFAULT_MODEL="", LLM_MAX_TOKENS="24"
    ) as parley:
        namespace: dict = {}
        for example in python_examples():
            code = example.replace("http://127.0.0.1:8000", parley.url).replace("pk_…", parley.key)
            exec(compile(code, str(DOC), "exec"), namespace)  # our own docs, run as written
        assert capsys.readouterr().out.strip(), "the streaming example printed nothing"
        assert namespace["reply"]["status"] in ("complete", "incomplete")
        assert namespace["reply"]["content"]
        assert namespace["again"]["reply"] != namespace["sent"]["reply"]

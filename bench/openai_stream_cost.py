"""CPU a streamed reply costs the process that generates it, in the OpenAI kinds' provider code
alone (llm/providers/openai_compatible.py): building the model and reading its stream as
llm/failover.py does (`chat_model_for`, then `_astream`), against a loopback OpenAI-compatible
upstream (tests/fault_server.py) streaming the reply of bench/openai_bench.py.

The figure is the CPU time of the thread that runs the event loop (time.thread_time; the
upstream runs in a thread of its own), per reply, median of `--rounds` rounds: CPU, not
latency, so a busy machine disturbs it little. Run it in two trees to compare them:

    .venv/bin/python bench/openai_stream_cost.py --replies 100 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fault_server import Reply, fault_server

UPSTREAM_TEXT = "Parley benchmark reply: " + " ".join(f"token{n}" for n in range(40))


async def one_round(config: Any, replies: int) -> float:
    """CPU seconds of this thread per reply, over `replies` replies one after another."""
    from langchain_core.messages import HumanMessage, SystemMessage

    from llm.options import GenerationOptions
    from llm.registry import chat_model_for

    messages = [SystemMessage("You are Parley."), HumanMessage("A unique question.")]
    began = time.thread_time()
    for _ in range(replies):
        model = chat_model_for(config, max_tokens=512, options=GenerationOptions())
        text: list[str] = []
        async for chunk in model._astream(messages):
            text.append(chunk.text)
        assert "".join(text) == UPSTREAM_TEXT
    return (time.thread_time() - began) / replies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=100, help="per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    from llm.providers.base import ProviderConfig

    with fault_server() as upstream:
        upstream.default("bench", Reply(text=UPSTREAM_TEXT, chunk_chars=8))
        config = ProviderConfig(
            name="openai-compatible",
            kind="openai-compatible",
            model="bench-model",
            base_url=upstream.base_url("bench"),
            timeout=30,
        )

        async def rounds() -> list[float]:
            await one_round(config, 3)  # warm up: imports, the pooled connection
            return [await one_round(config, args.replies) for _ in range(args.rounds)]

        per_reply = asyncio.run(rounds())
    chunks = len(Reply(text=UPSTREAM_TEXT, chunk_chars=8).chunks())
    print(
        f"CPU per streamed reply ({chunks} text chunks): median "
        f"{statistics.median(per_reply) * 1000:.2f} ms, rounds "
        + ", ".join(f"{value * 1000:.2f}" for value in per_reply)
    )


if __name__ == "__main__":
    main()

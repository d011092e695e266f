"""A reply's whole life, one module per stage (the README's "Where a token is born, travels
and lands" follows the same path):

- `dispatch`: born: the pending reply saved, announced, handed to a Celery task (`tasks`) or
  to a task on the server's loop;
- `lifecycle`: the row's states: claim (reply_start), checkpoint and heartbeat (in batches),
  cancel, finish (reply_finish);
- `stream`: the generation: prompt (`prompt`), the cache (`cache`) or the model (llm/),
  tokens coalesced into numbered deltas (`coalesce`) and published;
- `watch`: per process, the cancel polls, heartbeats and checkpoints of every live reply;
- `reaper`: the end of a reply whose generator died;
- `accounting`: what replies used: budgets settled, usage per user and day.

Only plain data crosses into llm/ (an alias, LangChain messages, a sink for text).
"""

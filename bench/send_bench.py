"""Send path benchmark: completed sends/s, send→ack and server-added first-token time, against
load, with a socket floor measured in the same run.

Closed-loop clients over real sockets, through the production topology on loopback (the
harness: nginx with the repository's nginx.conf → `--replicas` Daphne with the image's command
line → a private Redis (channel layer, cache, broker) ← the Celery `llm-remote` worker as
compose.yaml runs it, PostgreSQL). The simulated provider answers after its first-token delay
(`--first-token`, 200 ms as in production settings), cache off, rate limits raised. Each
client is its own user (so no quota row is shared) with its own conversation, and loops: send,
wait for `done`, send again. For each number of senders it reports

- sends/s: replies completed (`done`) per second, over all replicas and per replica;
- ack p50/p95: send → `ack` (the send path proper: limits, access, the transaction);
- first p50/p95: send → first `delta`, minus the provider's first-token delay: what the server
  adds before the first token reaches the client;
- stream p50: first `delta` → `done`; a reply that still streams has a first delta long before
  its end (the reply's own streaming time is `--tokens` / `--rate`);
- floor: the same sockets and clients doing `ping` → `pong` at the same concurrency, through
  nginx and Daphne, right before: ack p50 / pong p50 is the send path's cost over a bare frame;
- CPU seconds per completed send of each process (Daphne, worker, PostgreSQL, Redis, nginx).

    .venv/bin/python bench/send_bench.py --senders 20 100 --seconds 20 --plot docs/send_bench.png

`--profile DIR` samples Daphne and the worker with py-spy (`pip install py-spy`) during the
measured phase and prints each one's hottest frames (self and total); with `--gil` only the
thread holding the GIL, i.e. where CPU goes in Python rather than where threads wait.
`--baseline . --baseline-replicas 1 --replicas 2` measures two Daphne processes against one in
the same run. Loopback only, bounded: each level runs `--warmup` + `--seconds`, then the
topology stops.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.stream_bench import cpu_seconds, versions  # noqa: E402
from tests.harness import processes  # noqa: E402
from tests.harness.processes import PYTHON  # noqa: E402
from tests.harness.topology import Topology, production_topology  # noqa: E402

UNLIMITED = "100000000/m"


@dataclass
class Level:
    senders: int
    seconds: float = 0.0
    completed: int = 0
    window: int = 0  # completed from the warm-up on: CPU is measured over that span
    failed: int = 0
    acks: list[float] = field(default_factory=list)
    firsts: list[float] = field(default_factory=list)  # send → first delta, provider delay off
    streams: list[float] = field(default_factory=list)  # first delta → done
    pongs: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    error_frames: list[dict[str, Any]] = field(default_factory=list)  # for --show-errors
    # For --hops: (client_id, reply, sent, ack, first delta) of each measured send, seconds
    timelines: list[tuple[str, int, float, float, float]] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


# --- The users: one per sender, signed in through a session row -------------------------------

_SESSIONS = """
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
from accounts.services import account_create
for index in range({count}):
    user = account_create(username=f"bench-{run}-{{index}}", password=None)
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    print("sessionid=" + session.session_key)
"""


def sessions_create(topo: Topology, count: int) -> list[str]:
    """`count` users of the topology, each with a signed-in browser session (made by the
    topology's own code and database); their Cookie headers."""
    code = _SESSIONS.format(count=count, run=uuid.uuid4().hex[:6])
    out = processes.manage("shell", "-c", code, env=topo.env, timeout=600)
    return [line for line in out.splitlines() if line.startswith("sessionid=")]


@contextmanager
def checkout(path: Path) -> Iterator[None]:
    """Start processes from another checkout of Parley (`--baseline`): the harness runs
    everything from its REPO (working directory, Dockerfile, compose.yaml, nginx.conf)."""
    import tests.harness.topology as topology_module

    saved = processes.REPO
    processes.REPO = topology_module.REPO = path.resolve()
    try:
        yield
    finally:
        processes.REPO = topology_module.REPO = saved


@contextmanager
def logs_kept_apart(name: str) -> Iterator[None]:
    """PARLEY_KEEP_LOGS=DIR keeps each checkout's logs in DIR/NAME: both topologies name their
    processes alike (daphne-1, worker), and one copy would overwrite the other's."""
    keep = os.environ.get("PARLEY_KEEP_LOGS")
    if not keep:
        yield
        return
    os.environ["PARLEY_KEEP_LOGS"] = str(Path(keep) / name)
    try:
        yield
    finally:
        os.environ["PARLEY_KEEP_LOGS"] = keep


@contextmanager
def bench_topology(
    args: argparse.Namespace, env: dict[str, str], path: Path, replicas: int, name: str
) -> Iterator[Topology]:
    with ExitStack() as stack:
        with checkout(path), logs_kept_apart(name):
            topo = stack.enter_context(
                production_topology(
                    replicas=replicas,
                    provider="simulated",
                    env=env,
                    worker=False,
                    name="sendbench",
                )
            )
            extra = (f"--concurrency={args.worker_threads}",) if args.worker_threads else ()
            topo.start_worker(extra=extra)
        yield topo


# --- The clients --------------------------------------------------------------------------------


async def _recv(ws: Any, timeout: float) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        return json.loads(await ws.recv())


async def sender(
    ws: Any, level: Level, first_token: float, start: float, stop: float, timeout: float
) -> None:
    """Send, hear the reply to its end, send again, until `stop`; count what ends after
    `start` (the warm-up is not counted)."""
    conversation: int | None = None
    while time.monotonic() < stop:
        client_id = uuid.uuid4().hex
        frame = {
            "type": "send",
            "conversation": conversation,
            "text": "hello",
            "client_id": client_id,
        }
        sent = time.monotonic()
        await ws.send(json.dumps(frame))
        ack = first = None
        reply = None
        try:
            while True:
                message = await _recv(ws, timeout)
                now = time.monotonic()
                kind = message["type"]
                if kind == "ack" and message.get("client_id") == client_id:
                    ack, reply, conversation = now, message["reply"], message["conversation"]
                elif kind == "delta" and message["message"] == reply and first is None:
                    first = now
                elif kind in ("done", "error") and message.get("message") == reply:
                    if kind == "error":
                        level.errors[message["code"]] += 1
                        level.error_frames.append(message)
                    break
                elif kind == "error":
                    level.errors[message["code"]] += 1
                    level.error_frames.append(message)
                    break
        except TimeoutError:
            level.errors["timeout"] += 1
            return
        if ack is not None and first is not None:
            level.window += 1
        if sent < start:
            continue
        if ack is None or first is None:
            level.failed += 1
            continue
        level.completed += 1
        level.acks.append(ack - sent)
        level.firsts.append(first - sent - first_token)
        level.streams.append(now - first)
        level.timelines.append((client_id, reply, sent, ack, first))


async def pinger(ws: Any, level: Level, stop: float) -> None:
    while time.monotonic() < stop:
        sent = time.monotonic()
        await ws.send('{"type": "ping"}')
        while (await _recv(ws, 30))["type"] != "pong":
            pass
        level.pongs.append(time.monotonic() - sent)


async def open_sockets(topo: Topology, cookies: list[str]) -> list[Any]:
    from websockets.asyncio.client import connect
    from websockets.typing import Origin

    sockets = []
    for chunk in range(0, len(cookies), 50):
        sockets += await asyncio.gather(
            *(
                connect(
                    topo.ws_url,
                    origin=Origin(topo.base),
                    additional_headers={"Cookie": cookie},
                    open_timeout=60,
                    max_queue=None,
                    compression=None,
                )
                for cookie in cookies[chunk : chunk + 50]
            )
        )
    return sockets


def run_level(topo: Topology, cookies: list[str], args: argparse.Namespace, senders: int) -> Level:
    level = Level(senders)

    async def main() -> None:
        sockets = await open_sockets(topo, cookies[:senders])
        try:
            floor_stop = time.monotonic() + args.floor_seconds
            await asyncio.gather(*(pinger(ws, level, floor_stop) for ws in sockets))
            start = time.monotonic() + args.warmup
            stop = start + args.seconds
            profilers = await asyncio.to_thread(_profile_start, topo, args, senders, args.warmup)
            before = await asyncio.to_thread(cpu_seconds, topo.group)
            measured_from = time.monotonic()
            await asyncio.gather(
                *(
                    sender(ws, level, args.first_token, start, stop, args.reply_timeout)
                    for ws in sockets
                )
            )
            level.seconds = time.monotonic() - max(start, measured_from)
            after = await asyncio.to_thread(cpu_seconds, topo.group)
            py_spy_stop(profilers)
            for name, value in after.items():
                role = name.split("-")[0].split(".")[0]
                if name in before and value > before[name]:
                    level.cpu[role] = level.cpu.get(role, 0.0) + value - before[name]
            # CPU over the warm-up too: per send over everything completed in the window.
            level.cpu = {k: v / max(1, level.window) for k, v in level.cpu.items()}
            level.cpu["_window"] = time.monotonic() - measured_from
        finally:
            await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)

    asyncio.run(main())
    return level


# --- Profiling --------------------------------------------------------------------------------


Samplers = list[tuple[subprocess.Popen[bytes], Path]]


def py_spy_start(
    pids: dict[str, int],
    folder: Path,
    suffix: str,
    seconds: float | None = None,
    *,
    gil: bool = False,
    rate: int = 50,
) -> Samplers:
    """py-spy sampling each named process (a worker with its pool's children), collapsed
    stacks to FOLDER/NAME-SUFFIX.txt, for `seconds` or until `py_spy_stop`. `gil`: only the
    thread holding the GIL, i.e. where the process spends CPU in Python, not where its threads
    wait (for PostgreSQL, say)."""
    folder.mkdir(parents=True, exist_ok=True)
    py_spy = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
    started = []
    for name, pid in pids.items():
        out = folder / f"{name}-{suffix}.txt"
        argv = [py_spy, "record", "--nonblocking", "-r", str(rate), "-f", "raw", "-o", str(out)]
        argv += ["-p", str(pid), *(["-d", str(int(seconds))] if seconds else [])]
        argv += ["--subprocesses"] if name.startswith("worker") else []
        argv += ["--gil"] if gil else []
        devnull = subprocess.DEVNULL
        started.append((subprocess.Popen(argv, stdout=devnull, stderr=devnull), out))
    time.sleep(1.0)  # py-spy attaches
    return started


def py_spy_stop(samplers: Samplers) -> None:
    """Wait for (or stop) each sampler and print its hottest frames."""
    for proc, out in samplers:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
        if out.exists():
            print(f"\n--- {out.name} ---\n{profile_summary(out)}")


def _profile_start(
    topo: Topology, args: argparse.Namespace, senders: int, delay: float
) -> Samplers:
    if args.profile is None:
        return []
    pids = {role: topo.pid(role) for role in [*topo.replicas, "worker"]}
    return py_spy_start(
        pids, args.profile, str(senders), delay + args.seconds, gil=args.gil, rate=args.profile_rate
    )


def profile_summary(path: Path, top: int = 25) -> str:
    """The hottest frames of py-spy's collapsed stacks: self and total samples (busy only:
    frames idling in selectors, locks and queue waits are dropped)."""
    idle = (
        "select (selectors.py",
        "wait (threading.py",
        "_worker (concurrent",
        "poll (",
        "epoll",
        "_run_once (asyncio",
        "doPoll (twisted",
        "get (queue.py",
    )
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    busy = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        if any(marker in frames[-1] for marker in idle):
            continue
        count = int(count_text)
        busy += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    lines = [f"busy samples: {busy}", "self:"]
    lines += [f"  {n / busy:6.1%}  {f}" for f, n in own.most_common(top)] if busy else []
    interesting = [(f, n) for f, n in total.most_common(400) if "/work/" in f or "(chat" in f]
    lines.append("total (project frames):")
    lines += [f"  {n / busy:6.1%}  {f}" for f, n in interesting[:top]] if busy else []
    return "\n".join(lines)


# --- Hops: one send's life on one clock (--hops) -------------------------------------------------

# The stamps in the order a send passes them (core/hops.py): Daphne's before the ack are keyed
# by the send's client_id, the rest by its reply's id. `c.*` are the bench's own.
ACK_PATH = ["c.sent", "d.frame_in", "d.checked", "d.tx_begin", "d.statement", "d.stated",
            "d.commit", "d.published", "d.tx_end", "d.saved", "d.ack", "c.ack"]  # fmt: skip
FIRST_PATH = ["c.sent", "d.frame_in", "d.tx_begin", "d.statement", "d.stated", "d.commit",
              "d.published", "w.received",
              "w.task", "w.loop", "w.claim_begin", "w.claimed", "w.prompt", "w.provider_call",
              "w.first_token", "w.sunk", "d.delta_in", "d.delta_out", "c.first"]  # fmt: skip
# Stamped only where a send is one statement (PostgreSQL, chat/services/said.py), and not by
# checkouts older than it: a send without them is reported without those two hops.
OPTIONAL = {"d.statement", "d.stated"}


def hops_read(folder: Path) -> dict[str, dict[str, float]]:
    """Every process's stamps: key → name → seconds (the earliest, if stamped twice)."""
    stamps: dict[str, dict[str, float]] = {}
    for path in folder.glob("hops-*.log"):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) != 3:
                continue
            name, key, ns = parts
            seen = stamps.setdefault(key, {})
            seconds = int(ns) / 1e9
            if name not in seen or seconds < seen[name]:
                seen[name] = seconds
    return stamps


def hops_report(level: Level, folder: Path, first_token: float) -> str:
    """p50/p95 of each hop of the measured sends (ms), along the ack's path and the first
    token's; the provider's own first-token delay is taken out of its hop."""
    stamps = hops_read(folder)
    lines = []
    for title, path in (("send → ack", ACK_PATH), ("send → first delta", FIRST_PATH)):
        spans: dict[tuple[str, str], list[float]] = {}
        whole: list[float] = []
        for client_id, reply, sent, ack, first in level.timelines:
            seen = {**stamps.get(client_id, {}), **stamps.get(str(reply), {})}
            seen.update({"c.sent": sent, "c.ack": ack, "c.first": first})
            points = [(name, seen[name]) for name in path if name in seen]
            if len(points) != len([n for n in path if n in seen or n not in OPTIONAL]):
                continue
            for (a, at), (b, bt) in itertools.pairwise(points):
                gap = bt - at - (first_token if b == "w.first_token" else 0.0)
                spans.setdefault((a, b), []).append(gap)
            whole.append(points[-1][1] - sent - (first_token if "c.first" in path else 0))
        lines.append(f"  {title}: {len(whole)} of {len(level.timelines)} sends fully stamped")
        for (a, b), gaps in spans.items():
            lines.append(
                f"    {a:>15} → {b:<15} p50 {quantile(gaps, 0.5):7.2f}  "
                f"p95 {quantile(gaps, 0.95):7.2f} ms"
            )
        p50, p95 = quantile(whole, 0.5), quantile(whole, 0.95)
        lines.append(f"    {'whole':>33} p50 {p50:7.2f}  p95 {p95:7.2f} ms")
    return "\n".join(lines)


# --- Report -----------------------------------------------------------------------------------


def report(level: Level, replicas: int) -> str:
    pong = quantile(level.pongs, 0.5)
    ack = quantile(level.acks, 0.5)
    cpu = ", ".join(
        f"{role} {seconds * 1000:.1f}"
        for role, seconds in sorted(level.cpu.items())
        if not role.startswith("_") and role not in ("bench", "machine")
    )
    return (
        f"senders {level.senders:4d}: {level.rate:6.1f} sends/s ({level.rate / replicas:6.1f} "
        f"per replica), ack p50 {ack:6.1f} p95 {quantile(level.acks, 0.95):6.1f} ms, "
        f"first +p50 {quantile(level.firsts, 0.5):6.1f} p95 {quantile(level.firsts, 0.95):6.1f} "
        f"ms, stream p50 {quantile(level.streams, 0.5):6.1f} ms, pong p50 {pong:5.1f} ms "
        f"(ack/pong {ack / pong if pong else float('nan'):.1f}x), failed {level.failed}, "
        f"errors {dict(level.errors)}\n    CPU ms per send: {cpu}; machine "
        f"{level.cpu.get('machine', 0) * 1000:.1f}"
    )


def plot(results: dict[str, list[Level]], replicas: dict[str, int], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right, cpu) = plt.subplots(1, 3, figsize=(15, 4.2))
    for name, levels in results.items():
        xs = [level.senders for level in levels]
        for role, style in (("daphne", "o-"), ("worker", "s--"), ("postgres", "^:")):
            ys = [lv.cpu.get(role, float("nan")) * 1000 for lv in levels]
            cpu.plot(xs, ys, style, label=f"{name} {role}")
        xs = [level.senders for level in levels]
        left.plot(xs, [lv.rate / replicas[name] for lv in levels], "o-", label=name)
        for q, style in ((0.5, "o-"), (0.95, "s--")):
            label = f"{name} send→ack p{q * 100:.0f}"
            right.plot(xs, [quantile(lv.acks, q) for lv in levels], style, label=label)
        label = f"{name} added first token p50"
        right.plot(xs, [quantile(lv.firsts, 0.5) for lv in levels], "^:", label=label)
        right.plot(xs, [quantile(lv.pongs, 0.5) for lv in levels], "k:", alpha=0.4)
    left.axhline(200, color="grey", linestyle=":", label="goal 200/s")
    left.set_xlabel("concurrent senders (closed loop)")
    left.set_ylabel("completed sends/s per replica")
    left.legend(fontsize=8)
    right.set_xlabel("concurrent senders (closed loop)")
    right.set_ylabel("ms (log); dotted black: ping→pong floor")
    right.set_yscale("log")
    right.legend(fontsize=7)
    cpu.set_xlabel("concurrent senders (closed loop)")
    cpu.set_ylabel("CPU ms per completed send, per process")
    cpu.set_ylim(bottom=0)
    cpu.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    print(f"plot: {path}")


def hop_env(args: argparse.Namespace, name: str) -> dict[str, str]:
    """--hops: every process of checkout `name` stamps into a folder of its own."""
    if not args.hops:
        return {}
    folder = (args.hops / name).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("hops-*.log"):
        old.unlink()
    return {"PARLEY_HOP_STAMPS": str(folder)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--senders", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured, per level")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--floor-seconds", type=float, default=3.0)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument(
        "--baseline-replicas",
        type=int,
        help="Daphne processes of the baseline (default --replicas): with --baseline . this "
        "measures N processes against M in the same run",
    )
    parser.add_argument("--first-token", type=float, default=0.2, help="provider delay, s")
    parser.add_argument("--tokens", type=int, default=16, help="tokens per reply")
    parser.add_argument("--rate", type=float, default=100.0, help="provider tokens/s")
    parser.add_argument("--reply-timeout", type=float, default=60.0)
    parser.add_argument("--worker-threads", type=int, default=0, help="0: compose.yaml's")
    parser.add_argument("--env", nargs="*", default=[], help="NAME=VALUE for every process")
    parser.add_argument("--profile", type=Path, help="py-spy Daphne and the worker, stacks here")
    parser.add_argument(
        "--gil", action="store_true", help="profile: only the GIL holder (CPU, not waits)"
    )
    parser.add_argument(
        "--profile-rate", type=int, default=50, help="profile: samples a second per process"
    )
    parser.add_argument("--plot", type=Path, help="PNG of throughput and latency against load")
    parser.add_argument(
        "--baseline", type=Path, help="another checkout (e.g. a worktree of main), run alongside"
    )
    parser.add_argument("--json", type=Path, help="write the levels here too")
    parser.add_argument(
        "--hops",
        type=Path,
        help="stamp each send's hops (PARLEY_HOP_STAMPS, core/hops.py) into DIR/<checkout>/ and "
        "print p50/p95 per hop for each level",
    )
    parser.add_argument(
        "--show-errors",
        action="store_true",
        help="print every error frame a client received (code, detail, message), per level; "
        "PARLEY_KEEP_LOGS=DIR keeps every process's log",
    )
    args = parser.parse_args()

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    env = {
        "SIMULATED_FIRST_TOKEN_DELAY": str(args.first_token),
        "SIMULATED_TOKENS_PER_SECOND": str(args.rate),
        "LLM_MAX_TOKENS": str(args.tokens),
        "CACHE_ENABLED": "false",
        "WS_RATE_FRAMES_PER_USER": UNLIMITED,
        "WS_RATE_FRAMES_PER_ORG": UNLIMITED,
        "WS_RATE_SENDS_PER_USER": UNLIMITED,
        "WS_RATE_SENDS_PER_ORG": UNLIMITED,
        "LOG_LEVEL": "WARNING",
        **dict(item.split("=", 1) for item in args.env),
    }
    started = time.monotonic()
    checkouts = {"parley": REPO}
    if args.baseline:
        checkouts = {"baseline": args.baseline, **checkouts}
    results: dict[str, list[Level]] = {name: [] for name in checkouts}
    with ExitStack() as stack:
        replicas = {
            name: (args.baseline_replicas or args.replicas) if name == "baseline" else args.replicas
            for name in checkouts
        }
        topos = {
            name: stack.enter_context(
                bench_topology(args, {**env, **hop_env(args, name)}, path, replicas[name], name)
            )
            for name, path in checkouts.items()
        }
        cookies = {name: sessions_create(topo, max(args.senders)) for name, topo in topos.items()}
        # Warm every replica and the worker once (first imports, first connections).
        warm = argparse.Namespace(**{**vars(args), "seconds": 3.0, "warmup": 0.0, "profile": None})
        for name, topo in topos.items():
            run_level(topo, cookies[name], warm, min(args.senders))
        for index, senders in enumerate(args.senders):
            # Checkouts take turns, every other level in reverse: neither always goes first.
            names = list(topos) if index % 2 == 0 else list(topos)[::-1]
            for name in names:
                results[name].append(run_level(topos[name], cookies[name], args, senders))
                print(f"{name}: {report(results[name][-1], replicas[name])}", flush=True)
                if args.hops:
                    print(hops_report(results[name][-1], args.hops / name, args.first_token))
                if args.show_errors:
                    for frame in results[name][-1].error_frames:
                        print(f"    error frame: {json.dumps(frame)}", flush=True)
            if args.baseline:
                new, old = results["parley"][-1], results["baseline"][-1]
                print(
                    f"    parley/baseline: sends/s {new.rate / max(old.rate, 1e-9):.2f}x, "
                    f"ack p50 {quantile(new.acks, 0.5) / quantile(old.acks, 0.5):.2f}x, "
                    f"added first token p50 "
                    f"{quantile(new.firsts, 0.5) / quantile(old.firsts, 0.5):.2f}x",
                    flush=True,
                )
        problems = sum(t.log(role).count("Traceback") for t in topos.values() for role in t.roles)
    levels = results["parley"]
    print(f"\ntracebacks in logs: {problems}; whole run {time.monotonic() - started:.0f} s")
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; {versions()}")
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {
                        "senders": lv.senders,
                        "sends_per_s": lv.rate,
                        "ack_p50_ms": quantile(lv.acks, 0.5),
                        "ack_p95_ms": quantile(lv.acks, 0.95),
                        "first_added_p50_ms": quantile(lv.firsts, 0.5),
                        "first_added_p95_ms": quantile(lv.firsts, 0.95),
                        "stream_p50_ms": quantile(lv.streams, 0.5),
                        "pong_p50_ms": quantile(lv.pongs, 0.5),
                        "cpu_ms_per_send": {k: v * 1000 for k, v in lv.cpu.items()},
                        "errors": dict(lv.errors),
                    }
                    for lv in levels
                ],
                indent=1,
            )
        )
    if args.plot:
        plot(results, replicas, args.plot, f"send path, {args.replicas} Daphne replica(s)")


if __name__ == "__main__":
    main()

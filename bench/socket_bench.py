"""Many sockets: open, hold, lose a replica, reconnect, close; accept rate and memory per socket.

The production topology on loopback (the harness: nginx with the repository's nginx.conf →
`--replicas` Daphne with the image's command line → a private Redis ← no worker, PostgreSQL).
Every socket is authenticated (its own browser session, of one of `--users` users, with an
allowed Origin) and goes through nginx. Phases, each measured:

1. open `--sockets` sockets, `--batch` handshakes in flight at a time: accepts/s, failures;
2. hold them `--hold` seconds (the issue asks 10 minutes: `--hold 600`), checking every 10 s
   how many are still open, and answering Daphne's keepalive pings (client pings off);
3. kill one replica (SIGKILL): every socket it held is dropped; each client reconnects as the
   page does (static/chat/transport.js: first after 0–10 s, then waits doubling from 1 s to
   10 s, each 50–100 % of that, never giving up, one handshake at a time) and sends a
   `ping`: "resumed" once its `pong` is back. Time until all are back (and until their
   handshakes were), and how many did not make it in 30 s; once a second meanwhile, each
   process's CPU, the kernel's listen-queue overflows and each listening port's accept queue;
4. close every socket; server memory (RSS of each Daphne) before opening, when all were open,
   and `--settle` s after closing: KB per socket and how much came back.

A baseline in the same run: the same number of sockets against the bare ASGI app of
bench/floor_app.py on one Daphne, directly (no nginx, no Django): accepts/s and KB per socket
there are the floor that Parley's numbers are ratios of.

    .venv/bin/python bench/socket_bench.py --sockets 10000 --hold 60 [--clients 4]

`--clients N` spreads the clients over N processes (each opens, holds and reconnects its share),
so that one Python loop holding every socket is not what a storm measures.

Loopback only, bounded: every phase has a deadline; the topology stops at the end. The process
raises its own open-file limit to the hard limit (Daphne and nginx inherit it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.send_bench import py_spy_start, py_spy_stop  # noqa: E402
from tests.harness import processes  # noqa: E402
from tests.harness.processes import ProcessGroup, base_env, free_port  # noqa: E402
from tests.harness.topology import Topology, production_topology  # noqa: E402

PING = '{"type": "ping"}'

# static/chat/transport.js: the page's reconnect waits.
FIRST_RETRY_SPREAD = 10.0
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0

REOPEN_PAUSE = 5.0  # s between closing every socket and opening them again (`--reopen`)

# One browser session per socket, over `users` users (made by the topology's own code).
_SESSIONS = """
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from accounts.services import account_create
users = [account_create(username=f"sock-{run}-{{i}}", password=None) for i in range({users})]
rows = []
for index in range({sessions}):
    user = users[index % len(users)]
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    key = session._get_new_session_key()
    rows.append(Session(session_key=key, session_data=session.encode(session._session),
                        expire_date=session.get_expiry_date()))
    print("sessionid=" + key)
Session.objects.bulk_create(rows, batch_size=1000)
"""


def sessions_create(topo: Topology, users: int, sessions: int) -> list[str]:
    """`sessions` signed-in browser sessions of `users` users; their Cookie headers."""
    code = _SESSIONS.format(users=users, sessions=sessions, run=random.randbytes(3).hex())
    out = processes.manage("shell", "-c", code, env=topo.env, timeout=600)
    return [line for line in out.splitlines() if line.startswith("sessionid=")]


def backoff_delay(attempt: int, first_spread: float = FIRST_RETRY_SPREAD) -> float:
    """The page's wait before reconnect attempt `attempt` (transport.js `backoffDelay`): the
    first uniform over 0–`first_spread` s (0: the page before December 4th, 0.25–0.5 s)."""
    if attempt == 0 and first_spread > 0:
        return random.uniform(0, first_spread)
    ceiling = min(BACKOFF_MAX, BACKOFF_FIRST * 2**attempt)
    return ceiling / 2 + random.random() * ceiling / 2


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class Result:
    label: str
    sockets: int
    opened: int = 0
    open_seconds: float = 0.0
    failed: dict[str, int] = field(default_factory=dict)
    held: list[tuple[float, int]] = field(default_factory=list)
    rss_before: dict[str, int] = field(default_factory=dict)
    rss_open: dict[str, int] = field(default_factory=dict)
    rss_closed: dict[str, int] = field(default_factory=dict)
    cpu_open: float = 0.0  # server CPU seconds spent while opening
    reopened: int = 0  # `--reopen`: the same sockets closed and opened again (cache hits)
    reopen_seconds: float = 0.0
    reopen_failed: dict[str, int] = field(default_factory=dict)
    cpu_reopen: float = 0.0
    storm: dict[str, Any] = field(default_factory=dict)

    def kb_per_socket(self) -> float:
        grown = sum(self.rss_open.values()) - sum(self.rss_before.values())
        return grown / self.opened if self.opened else float("nan")

    def kept_after_close(self) -> float:
        """KB per socket still held after every socket closed."""
        kept = sum(self.rss_closed.values()) - sum(self.rss_before.values())
        return kept / self.opened if self.opened else float("nan")


def cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _children(pid: int) -> list[int]:
    """Direct children of `pid` (nginx's workers)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _tcp_ext() -> dict[str, int]:
    """The kernel's TcpExt counters (/proc/net/netstat), as nstat shows them."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names.startswith("TcpExt:"):
            return dict(zip(names.split()[1:], map(int, values.split()[1:]), strict=True))
    return {}


def _accept_queues(ports: dict[str, int]) -> dict[str, str]:
    """Each named listening port's accept queue, "waiting/backlog" (`ss`: the kernel lists only
    listening sockets, where /proc/net/tcp would list every socket of the run)."""
    by_port = {port: name for name, port in ports.items()}
    out = subprocess.run(["ss", "-Hlnt"], capture_output=True, text=True, check=False).stdout
    found = {}
    for line in out.splitlines():
        fields = line.split()  # State Recv-Q Send-Q Local-Address:Port Peer
        port = int(fields[3].rsplit(":", 1)[1])
        if port in by_port:
            found[by_port[port]] = f"{fields[1]}/{fields[2]}"
    return found


class StormProbe(threading.Thread):
    """Once a second while the storm lasts: CPU of each process (% of one core), the kernel's
    listen-queue overflows, each listening port's accept queue, and how many are back. In a
    thread of its own, so a busy client loop does not silence it."""

    def __init__(self, pids: dict[str, list[int]], ports: dict[str, int], back: list[float] | None):
        super().__init__(daemon=True)
        self.pids, self.ports, self.back = pids, ports, back
        self.stop = threading.Event()
        self.lines: list[str] = []

    def run(self) -> None:
        started = time.monotonic()
        last_cpu = {name: cpu_of(pids) for name, pids in self.pids.items()}
        last_ext, last_t, last_back = _tcp_ext(), started, 0
        while not self.stop.wait(1.0):
            now = time.monotonic()
            cpu = {}
            for name, pids in self.pids.items():
                try:
                    cpu[name] = cpu_of(pids)
                except OSError:  # the victim, once killed
                    cpu[name] = last_cpu[name]
            ext = _tcp_ext()
            span = now - last_t
            shares = " ".join(
                f"{name} {100 * (cpu[name] - last_cpu[name]) / span:3.0f}%" for name in cpu
            )
            overflows = ext.get("ListenOverflows", 0) - last_ext.get("ListenOverflows", 0)
            drops = ext.get("ListenDrops", 0) - last_ext.get("ListenDrops", 0)
            back = len(self.back) if self.back is not None else 0  # 0: counted elsewhere
            line = (
                f"  {now - started:5.1f} s back {back:5d} (+{back - last_back:4d}) | {shares} | "
                f"listen overflows +{overflows} drops +{drops} | accept queues "
                + " ".join(f"{k} {v}" for k, v in _accept_queues(self.ports).items())
            )
            self.lines.append(line)
            print(line, flush=True)
            last_cpu, last_ext, last_t, last_back = cpu, ext, now, back


class Socket:
    """One client: connects (again after a drop, when told to), answers pings."""

    def __init__(self, url: str, headers: dict[str, str], origin: str | None) -> None:
        self.url, self.headers, self.origin = url, headers, origin
        self.ws: Any = None
        self.dropped_at: float | None = None

    async def connect(self, timeout: float = 60) -> None:
        from websockets.asyncio.client import connect
        from websockets.typing import Origin

        self.ws = await connect(
            self.url,
            additional_headers=self.headers,
            origin=Origin(self.origin) if self.origin else None,
            open_timeout=timeout,
            ping_interval=None,  # Daphne pings every 20 s; the client answers
            max_queue=None,
            compression=None,
        )

    @property
    def is_open(self) -> bool:
        from websockets.protocol import State

        return self.ws is not None and self.ws.state is State.OPEN


async def open_all(sockets: list[Socket], batch: int, result: Result) -> None:
    semaphore = asyncio.Semaphore(batch)

    async def one(sock: Socket) -> None:
        async with semaphore:
            try:
                await sock.connect()
                result.opened += 1
            except Exception as error:
                kind = type(error).__name__
                result.failed[kind] = result.failed.get(kind, 0) + 1

    started = time.monotonic()
    await asyncio.gather(*(one(sock) for sock in sockets))
    result.open_seconds = time.monotonic() - started


async def hold(sockets: list[Socket], seconds: float, result: Result) -> None:
    """Every socket reads (pings are answered while reading) until the hold ends."""

    async def reader(sock: Socket) -> None:
        try:
            async for _ in sock.ws:
                pass
        except Exception:
            pass

    readers = [asyncio.create_task(reader(s)) for s in sockets if s.ws is not None]
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        await asyncio.sleep(min(10.0, seconds - elapsed))
        result.held.append((round(time.monotonic() - started), sum(s.is_open for s in sockets)))
        at, count = result.held[-1]
        print(f"  held {count} of {len(sockets)} at {at} s", flush=True)
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)


async def storm(
    topo: Topology,
    clients: list[Socket] | ClientProcesses,
    victim: str,
    deadline: float,
    first_spread: float,
    profile: Path | None = None,
) -> dict[str, Any]:
    """Kill `victim`; every dropped client reconnects as the page does and pings. `profile`:
    py-spy the survivors meanwhile (FOLDER/daphne-N-storm.txt)."""
    back: list[float] = []  # resumed: handshake done and a pong back (in this process)
    client_pids = clients.pids if isinstance(clients, ClientProcesses) else [os.getpid()]
    survivors = [role for role in topo.replicas if role != victim]
    nginx = topo.pid("nginx")
    probe = StormProbe(
        {
            **{role: [topo.pid(role)] for role in survivors},
            "nginx": [nginx, *_children(nginx)],
            "redis": [topo.pid("redis")],
            "client": client_pids,
        },
        {
            **{role: topo.daphne_ports[topo.replicas.index(role)] for role in survivors},
            "nginx": topo.nginx_port or 0,
        },
        None if isinstance(clients, ClientProcesses) else back,
    )
    samplers = []
    if profile is not None:
        pids = {role: topo.pid(role) for role in survivors}
        samplers = await asyncio.to_thread(py_spy_start, pids, profile, "storm", deadline)
    killed_at = time.monotonic()
    await asyncio.to_thread(topo.kill, victim)
    probe.start()
    if isinstance(clients, ClientProcesses):
        parts = await clients.storm(killed_at, deadline)
    else:
        parts = [await reconnect(clients, killed_at, deadline, first_spread, back)]
    probe.stop.set()
    await asyncio.to_thread(py_spy_stop, samplers)
    opened = sorted(t for part in parts for t in part["opened"])
    back = sorted(t for part in parts for t in part["back"])
    lost: dict[str, int] = {}
    for part in parts:
        for kind, count in part["lost"].items():
            lost[kind] = lost.get(kind, 0) + count
    dropped = sum(part["dropped"] for part in parts)
    return {
        "opened_p50_s": round(opened[len(opened) // 2], 1) if opened else None,
        "opened_last_s": round(opened[-1], 1) if opened else None,
        "dropped": dropped,
        "back": len(back),
        "all_back_s": round(back[-1], 1) if back and len(back) >= dropped else None,
        "p50_back_s": round(back[len(back) // 2], 1) if back else None,
        "retries": lost,
    }


async def reconnect(
    sockets: list[Socket],
    killed_at: float,
    deadline: float,
    first_spread: float,
    back: list[float] | None = None,
) -> dict[str, Any]:
    """Every client whose socket dropped reconnects as the page does and pings, until the
    deadline (counted from `killed_at`, a `time.monotonic()`: the same clock in every process).
    `back` (seconds after the kill of each pong) grows as they come back."""
    back = [] if back is None else back
    opened: list[float] = []  # handshake done
    lost: dict[str, int] = {}
    closed = 0  # sockets seen to drop before the deadline (a busy loop sees some late)

    async def watch(sock: Socket) -> None:
        nonlocal closed
        try:
            await sock.ws.wait_closed()
        except Exception:
            pass
        if time.monotonic() - killed_at > deadline:
            return
        closed += 1
        attempt = 0
        while True:
            await asyncio.sleep(backoff_delay(attempt, first_spread))
            attempt += 1
            if (left := deadline - (time.monotonic() - killed_at)) <= 0:
                return
            try:
                # Like a browser, a handshake is not abandoned for another (this one only
                # stops waiting when the measurement ends).
                await sock.connect(timeout=left)
                opened.append(time.monotonic() - killed_at)
                await sock.ws.send(PING)
                async with asyncio.timeout(10):
                    while '"pong"' not in await sock.ws.recv():
                        pass
                back.append(time.monotonic() - killed_at)
                return
            except Exception as error:
                kind = type(error).__name__
                if (response := getattr(error, "response", None)) is not None:
                    kind += f" {response.status_code}"
                lost[kind] = lost.get(kind, 0) + 1

    # Sockets on the surviving replica stay open: their watch waits until the deadline.
    watchers = [asyncio.create_task(watch(s)) for s in sockets if s.ws is not None]
    await asyncio.sleep(2)  # the victim's sockets close within a moment of its death
    # Until every socket seen to drop is back and none is still down (a count taken once
    # after 2 s missed drops this loop saw later, and stopped their reconnects early).
    while time.monotonic() - killed_at < deadline and (
        len(back) < closed or not all(s.is_open for s in sockets if s.ws is not None)
    ):
        await asyncio.sleep(0.25)
    for task in watchers:
        task.cancel()
    await asyncio.gather(*watchers, return_exceptions=True)
    return {"opened": opened, "back": list(back), "lost": lost, "dropped": closed}


class ClientProcesses:
    """The clients spread over `count` processes (`--clients`), so that no single Python loop
    holding thousands of sockets is what the storm measures. Each process opens its share,
    reads them, and reconnects them after the kill; this one only gives commands."""

    def __init__(
        self, count: int, url: str, cookies: list[str], origin: str, args: argparse.Namespace
    ) -> None:
        import multiprocessing

        context = multiprocessing.get_context("fork")  # before this process runs a loop
        self.conns: list[Any] = []
        self.procs: list[Any] = []
        for index in range(count):
            mine, theirs = context.Pipe()
            share = cookies[index::count]
            batch = max(1, args.batch // count)
            proc = context.Process(
                target=_client_process,
                args=(theirs, url, share, origin, batch, args.first_spread),
                daemon=True,
            )
            proc.start()
            self.conns.append(mine)
            self.procs.append(proc)

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    async def ask(self, *command: Any) -> list[Any]:
        for conn in self.conns:
            conn.send(command)
        return [await asyncio.to_thread(conn.recv) for conn in self.conns]

    async def open(self, result: Result) -> None:
        for conn in self.conns:
            conn.send(("open",))
        for opened, failed in [await asyncio.to_thread(conn.recv) for conn in self.conns]:
            result.opened += opened
            for kind, count in failed.items():
                result.failed[kind] = result.failed.get(kind, 0) + count

    async def hold(self, seconds: float, result: Result) -> None:
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            await asyncio.sleep(min(10.0, seconds - elapsed))
            count = sum(await self.ask("count"))
            result.held.append((round(time.monotonic() - started), count))
            print(f"  held {count} of {result.sockets} at {result.held[-1][0]} s", flush=True)

    async def storm(self, killed_at: float, deadline: float) -> list[dict[str, Any]]:
        return await self.ask("storm", killed_at, deadline)

    async def reopen(self, result: Result) -> None:
        for opened, failed in await self.ask("reopen"):
            result.reopened += opened
            for kind, count in failed.items():
                result.reopen_failed[kind] = result.reopen_failed.get(kind, 0) + count

    async def close(self) -> None:
        await self.ask("close")
        for proc in self.procs:
            proc.join(timeout=30)


def _client_process(
    conn: Any, url: str, cookies: list[str], origin: str, batch: int, first_spread: float
) -> None:
    """One process's share of the clients, driven by ClientProcesses' commands."""

    async def main() -> None:
        sockets = [Socket(url, {"Cookie": cookie}, origin) for cookie in cookies]
        result = Result("share", len(sockets))
        await asyncio.to_thread(conn.recv)  # "open"
        await open_all(sockets, batch, result)
        conn.send((result.opened, result.failed))
        readers = [asyncio.create_task(_read(s)) for s in sockets if s.ws is not None]
        reopening: list[Socket] = []
        while True:
            command, *rest = await asyncio.to_thread(conn.recv)
            if command == "count":
                conn.send(sum(s.is_open for s in sockets))
            elif command == "shut":  # close every socket, to open them again
                for task in readers:
                    task.cancel()
                await asyncio.gather(*readers, return_exceptions=True)
                reopening = [s for s in sockets if s.ws is not None]
                await close_all(reopening)
                conn.send(len(reopening))
            elif command == "reopen":
                again = Result("share", len(reopening))
                await open_all(reopening, batch, again)
                conn.send((again.opened, again.failed))
                readers = [asyncio.create_task(_read(s)) for s in sockets if s.ws is not None]
            elif command == "storm":
                for task in readers:
                    task.cancel()
                await asyncio.gather(*readers, return_exceptions=True)
                killed_at, deadline = rest
                conn.send(await reconnect(sockets, killed_at, deadline, first_spread))
            elif command == "close":
                await close_all(sockets)
                conn.send("closed")
                return

    asyncio.run(main())


async def _read(sock: Socket) -> None:
    """Read a socket until it closes (Daphne's pings are answered while reading)."""
    try:
        async for _ in sock.ws:
            pass
    except Exception:
        pass


async def close_all(sockets: list[Socket]) -> None:
    await asyncio.gather(
        *(s.ws.close() for s in sockets if s.ws is not None), return_exceptions=True
    )


async def reopen(
    clients: list[Socket] | ClientProcesses,
    pids: dict[str, int],
    args: argparse.Namespace,
    result: Result,
) -> None:
    """`--reopen`: every socket closed, then opened again: server CPU per accept of a
    reconnect within the handshake cache's lifetime, as in a storm (the closes not counted)."""
    if isinstance(clients, ClientProcesses):
        await clients.ask("shut")
    else:
        await close_all([s for s in clients if s.ws is not None])
    await asyncio.sleep(REOPEN_PAUSE)  # the server sees them go and trims its memory
    samplers = []
    if args.profile is not None:
        samplers = await asyncio.to_thread(py_spy_start, pids, args.profile, "reopen")
    cpu_before = cpu_of(list(pids.values()))
    started = time.monotonic()
    if isinstance(clients, ClientProcesses):
        await clients.reopen(result)
    else:
        again = Result("reopen", len(clients))
        await open_all([s for s in clients if s.ws is not None], args.batch, again)
        result.reopened, result.reopen_failed = again.opened, again.failed
    result.reopen_seconds = time.monotonic() - started
    result.cpu_reopen = cpu_of(list(pids.values())) - cpu_before
    await asyncio.to_thread(py_spy_stop, samplers)
    print(
        f"  reopened {result.reopened} in {result.reopen_seconds:.1f} s "
        f"({result.reopened / result.reopen_seconds:.0f}/s, server CPU "
        f"{result.cpu_reopen / max(1, result.reopened) * 1000:.2f} ms per accept), "
        f"failed {result.reopen_failed}",
        flush=True,
    )


def run(
    label: str,
    sockets: list[Socket],
    pids: dict[str, int],
    args: argparse.Namespace,
    topo: Topology | None = None,
    cookies: list[str] | None = None,
) -> Result:
    result = Result(label, len(sockets))
    result.rss_before = {name: rss_kb(pid) for name, pid in pids.items()}
    clients: list[Socket] | ClientProcesses = sockets
    if topo is not None and cookies is not None and args.clients > 1:
        cookies = [cookies[i % len(cookies)] for i in range(len(sockets))]
        clients = ClientProcesses(args.clients, topo.ws_url, cookies, topo.base, args)

    async def main() -> None:
        samplers = []
        if args.profile is not None:
            tag = label.split()[0]
            samplers = await asyncio.to_thread(py_spy_start, pids, args.profile, tag)
        cpu_before = cpu_of(list(pids.values()))
        if isinstance(clients, ClientProcesses):
            started = time.monotonic()
            await clients.open(result)
            result.open_seconds = time.monotonic() - started
        else:
            await open_all(sockets, args.batch, result)
        result.cpu_open = cpu_of(list(pids.values())) - cpu_before
        await asyncio.to_thread(py_spy_stop, samplers)
        await asyncio.sleep(2)
        result.rss_open = {name: rss_kb(pid) for name, pid in pids.items()}
        print(
            f"{label}: opened {result.opened} of {len(sockets)} in {result.open_seconds:.1f} s "
            f"({result.opened / result.open_seconds:.0f}/s, server CPU "
            f"{result.cpu_open / max(1, result.opened) * 1000:.2f} ms per accept), failed "
            f"{result.failed}; {result.kb_per_socket():.1f} KB per socket",
            flush=True,
        )
        if topo is not None:
            if isinstance(clients, ClientProcesses):
                await clients.hold(args.hold, result)
            else:
                await hold(sockets, args.hold, result)
            if args.reopen:
                await reopen(clients, pids, args, result)
            if args.storm:
                victim = topo.replicas[-1]
                result.storm = await storm(
                    topo, clients, victim, args.deadline, args.first_spread, args.profile
                )
                print(f"  reconnect storm after killing {victim}: {result.storm}", flush=True)
                pids.pop(victim)
                result.rss_before.pop(victim)
                result.rss_open.pop(victim)
        if isinstance(clients, ClientProcesses):
            await clients.close()
        else:
            await close_all(sockets)
        await asyncio.sleep(args.settle)
        result.rss_closed = {name: rss_kb(pid) for name, pid in pids.items()}
        print(
            f"  after close ({args.settle:.0f} s): RSS {sum(result.rss_closed.values()) // 1024} "
            f"MB vs {sum(result.rss_before.values()) // 1024} MB before, "
            f"{sum(result.rss_open.values()) // 1024} MB open; "
            f"{result.kept_after_close():.1f} KB per socket kept",
            flush=True,
        )

    asyncio.run(main())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=10000)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--batch", type=int, default=200, help="handshakes in flight")
    parser.add_argument(
        "--clients", type=int, default=1, help="processes the Parley clients are spread over"
    )
    parser.add_argument("--hold", type=float, default=60.0, help="seconds (the issue: 600)")
    parser.add_argument("--storm", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--reopen",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="after the hold, close every socket and open it again (handshake cache hits)",
    )
    parser.add_argument(
        "--first-spread",
        type=float,
        default=FIRST_RETRY_SPREAD,
        help="first reconnect uniform over 0–N s (the page's: 10; 0: its earlier 0.25–0.5 s)",
    )
    parser.add_argument("--deadline", type=float, default=30.0, help="storm goal, s")
    parser.add_argument("--settle", type=float, default=15.0, help="s after close for RSS")
    parser.add_argument("--floor", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--env", nargs="*", default=[], help="NAME=VALUE for the replicas")
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy the servers while sockets open (and reopen), the survivors during the storm",
    )
    args = parser.parse_args()

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"open files limit {hard}; sockets {args.sockets} over {args.replicas} replicas")
    env = {
        "CACHE_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
        **dict(item.split("=", 1) for item in args.env),
    }
    started = time.monotonic()
    if args.floor:
        logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"socket-bench-floor-{os.getpid()}"
        logs.mkdir(parents=True, exist_ok=True)
        group = ProcessGroup(log_dir=logs)
        try:
            port = free_port()
            proc = group.daphne(
                "floor", port, base_env(), app="bench.floor_app:application", wait_for="/"
            )
            url = f"ws://127.0.0.1:{port}/?frames=0&rate=1"
            floor = [Socket(url, {}, None) for _ in range(args.sockets)]
            run("floor (bare ASGI app, one Daphne, direct)", floor, {"floor": proc.pid}, args)
        finally:
            group.stop_all()
    with production_topology(
        replicas=args.replicas, provider="simulated", env=env, worker=False, name="sockbench"
    ) as topo:
        cookies = sessions_create(topo, args.users, args.sockets)
        sockets = [
            Socket(topo.ws_url, {"Cookie": cookies[i % len(cookies)]}, topo.base)
            for i in range(args.sockets)
        ]
        pids = {role: topo.pid(role) for role in topo.replicas}
        label = f"parley ({args.replicas} replicas via nginx, {args.clients} client processes)"
        result = run(label, sockets, pids, args, topo, cookies)
        held = min((n for _, n in result.held), default=result.opened)
        print(
            f"held at least {held} of {args.sockets} ({held / args.sockets:.2%}) for "
            f"{args.hold:.0f} s; tracebacks: "
            f"{sum(topo.log(r).count('Traceback') for r in topo.roles)}"
        )
        for role in topo.roles:  # the first traceback of each process that logged one
            log = topo.log(role)
            if (at := log.find("Traceback")) >= 0:
                print(f"--- {role}: first of {log.count('Traceback')} tracebacks ---")
                print("\n".join(log[at:].splitlines()[:40]))
    print(f"whole run {time.monotonic() - started:.0f} s, load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

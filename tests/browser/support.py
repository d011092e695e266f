"""What the browser tests share: a real Daphne in embedded mode with the simulated provider,
headless Debian Chromium (FINDINGS: launch args), a page that fails its test on any script error
or CSP violation, and a relay between the page and the server's socket."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.harness.processes import ProcessGroup, base_env, free_port, manage, require_binary
from tests.harness.topology import Topology

USERNAME = "olivia"
PASSWORD = "correct horse battery staple"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT = Path("/tmp/parley_chat.png")
FINAL = ("complete", "cancelled", "failed")
WAIT_MS = 20_000


@dataclass
class Server:
    url: str
    env: dict[str, str]
    group: ProcessGroup

    def saved_content(self, message_id: int) -> str:
        """The reply text as the database holds it (read straight from the SQLite file)."""
        with closing(sqlite3.connect(self.env["SQLITE_PATH"], timeout=10)) as db:
            row = db.execute("SELECT content FROM chat_message WHERE id = ?", (message_id,))
            return row.fetchone()[0]

    def query(self, sql: str, *params: object) -> list[tuple]:
        with closing(sqlite3.connect(self.env["SQLITE_PATH"], timeout=10)) as db:
            return db.execute(sql, params).fetchall()

    def add_user(self, username: str) -> str:
        """Another person with the same password, so a test starts with an empty sidebar."""
        _create_user(self.env, username)
        return username


def _create_user(env: dict[str, str], username: str) -> None:
    manage(
        "shell",
        "-c",
        "from accounts.models import User; "
        f"User.objects.create_user(username={username!r}, password={PASSWORD!r})",
        env=env,
        timeout=60,
    )


def _start_server(tmp: Path, *, tokens_per_second: float) -> Iterator[Server]:
    env = base_env(
        SQLITE_PATH=str(tmp / "db.sqlite3"),
        DJANGO_DEBUG="false",
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        SERVE_STATIC="true",
        LLM_DEFAULT_PROVIDER="simulated",
        SIMULATED_TOKENS_PER_SECOND=str(tokens_per_second),
        SIMULATED_FIRST_TOKEN_DELAY="0.3",
        LOG_LEVEL="WARNING",
    )
    manage("migrate", "--noinput", env=env, timeout=120)
    _create_user(env, USERNAME)
    group = ProcessGroup(log_dir=tmp)
    port = free_port()
    try:
        group.daphne("daphne", port, env)
        yield Server(url=f"http://127.0.0.1:{port}", env=env, group=group)
    finally:
        group.stop_all()


@pytest.fixture(scope="module")
def chromium_path() -> str:
    return require_binary("chromium")


@pytest.fixture(scope="module")
def server(chromium_path, tmp_path_factory) -> Iterator[Server]:
    """Replies at 30 tokens a second: a short reply streams for about a second."""
    yield from _start_server(tmp_path_factory.mktemp("parley-fast"), tokens_per_second=30)


@pytest.fixture(scope="module")
def slow_server(chromium_path, tmp_path_factory) -> Iterator[Server]:
    """Replies at 6 tokens a second: time enough to click Stop or drop the connection."""
    yield from _start_server(tmp_path_factory.mktemp("parley-slow"), tokens_per_second=6)


@pytest.fixture(scope="module")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class PageProblems:
    """JavaScript errors and CSP violations the page reported."""

    errors: list[str] = field(default_factory=list)

    def watch(self, page) -> None:
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", self._console)

    def _console(self, message) -> None:
        text = message.text
        if message.type == "error" and ("Content Security Policy" in text or "Refused" in text):
            self.errors.append(f"csp: {text}")


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    problems = PageProblems()
    problems.watch(page)
    try:
        yield page
        assert problems.errors == [], problems.errors
    finally:
        context.close()


@pytest.fixture
def open_page(browser):
    """Pages of other sizes and colour schemes: `open_page(width=390, color_scheme="dark")`.
    Each fails its test on a script error or CSP violation, like `page`."""
    contexts = []
    watched: list[PageProblems] = []

    def opener(width: int = 1280, height: int = 800, color_scheme: str = "light", **options):
        context = browser.new_context(
            viewport={"width": width, "height": height}, color_scheme=color_scheme, **options
        )
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        new = context.new_page()
        problems = PageProblems()
        problems.watch(new)
        watched.append(problems)
        return new

    try:
        yield opener
        assert [e for p in watched for e in p.errors] == []
    finally:
        for context in contexts:
            context.close()


# --- helpers -------------------------------------------------------------------------------


# Run in the page: records (status, length) of the last reply at every change of the list.
RECORD_RENDERS = """() => {
  window.__renders = [];
  const messages = document.getElementById("messages");
  new MutationObserver(() => {
    const replies = messages.querySelectorAll("article.message--assistant");
    const reply = replies[replies.length - 1];
    if (!reply) return;
    const length = reply.querySelector(".message__body").textContent.length;
    window.__renders.push([reply.dataset.status, length]);
  }).observe(messages, {subtree: true, childList: true, characterData: true, attributes: true});
}"""


def sign_in(page, server: Server | Topology, username: str = USERNAME):
    from playwright.sync_api import expect

    page.goto(f"{server.url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click(".auth-card button[type=submit]")
    page.wait_for_url(f"{server.url}/")
    expect(page.locator("#status")).to_have_text("Connected", timeout=WAIT_MS)


def send(page, text: str):
    """Type a message, press Enter; return the reply's article once the ack named it."""
    from playwright.sync_api import expect

    page.fill("#composer-text", text)
    page.press("#composer-text", "Enter")
    reply = page.locator("#messages article.message--assistant").last
    expect(reply).to_have_attribute("data-message-id", re.compile(r"^\d+$"), timeout=WAIT_MS)
    expect(page.locator("#composer-text")).to_have_value("", timeout=WAIT_MS)
    return reply


def wait_final(reply, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = reply.get_attribute("data-status")
        if status in FINAL:
            return status
        reply.page.wait_for_timeout(50)  # not time.sleep: Playwright dispatches events meanwhile
    raise AssertionError(f"reply not final within {timeout}s: {reply.get_attribute('data-status')}")


def body_text(reply) -> str:
    return reply.locator(".message__body").text_content() or ""


def normalized(text: str) -> str:
    return " ".join(text.split())


class SocketRelay:
    """Sits between the page and Daphne (Playwright's WebSocket routing); can lose deltas
    like the channel layer may, and cut the connection."""

    def __init__(self) -> None:
        self.connections: list = []  # (page side, server side)
        self.from_page: list[tuple[int, dict]] = []
        self.dropped: list[dict] = []
        self.drop_next_deltas = 0
        self.refusing = False  # the server is unreachable: every connection closes at once
        self.refused = 0
        self.lose_next_ack = False  # the ack is lost together with the connection
        # Replaces each `done` on its way to the page: how a reply the server ends otherwise
        # (cut off upstream, stopped at the token cap) arrives there.
        self.rewrite_done: Callable[[dict], dict] | None = None
        # Keeps the page from hearing deltas and ends until release(): a model still busy.
        self.holding = False
        self.held: list[str] = []

    def __call__(self, ws) -> None:
        if self.refusing:
            self.refused += 1
            ws.close(code=1006, reason="test: unreachable")
            return
        server = ws.connect_to_server()
        number = len(self.connections)
        self.connections.append((ws, server))

        def to_server(message) -> None:
            self.from_page.append((number, json.loads(message)))
            server.send(message)

        def to_page(message) -> None:
            frame = json.loads(message)
            if self.holding and frame.get("type") in ("delta", "done", "error"):
                self.held.append(message)
                return
            if frame.get("type") == "delta" and self.drop_next_deltas > 0:
                self.drop_next_deltas -= 1
                self.dropped.append(frame)
                return
            if frame.get("type") == "done" and self.rewrite_done:
                ws.send(json.dumps(self.rewrite_done(frame)))
                return
            if frame.get("type") == "ack" and self.lose_next_ack:
                self.lose_next_ack = False
                self.dropped.append(frame)
                self.cut()
                return
            ws.send(message)

        ws.on_message(to_server)
        server.on_message(to_page)

    def release(self) -> None:
        self.holding = False
        ws = self.connections[-1][0]
        for message in self.held:
            ws.send(message)
        self.held.clear()

    def cut(self) -> None:
        ws, server = self.connections[-1]
        ws.close(code=4000, reason="test: connection lost")
        server.close()

    def sends(self) -> list[dict]:
        return [f for _, f in self.from_page if f["type"] == "send"]

    def resumes(self, connection: int) -> list[dict]:
        return [f for n, f in self.from_page if n == connection and f["type"] == "resume"]


def wait_until(page, predicate, timeout: float = 20, what: str = "condition") -> None:
    """Poll a Python-side condition while Playwright keeps dispatching (e.g. the relay)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        page.wait_for_timeout(50)

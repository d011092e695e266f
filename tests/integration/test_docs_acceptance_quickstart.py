"""README.md's quick start, played on a clean copy of the checkout: `make run PORT=…` migrates
a SQLite database, creates a first admin account and prints its username and password, and
starts Daphne in embedded mode (no services, no network); the printed account signs in on the
chat page and reaches `/admin/`, `/accounts/signup/` is where the README says, and a message
sent on the page's socket is answered by the bundled local model (SmolLM2 through llama.cpp).

The copy reuses the test run's own virtualenv (`make -o .venv/.installed`): the first install
(7–8 minutes, llama.cpp compiled) is `make test`'s own first step, not played again here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.typing import Origin

from tests.harness.processes import REPO, free_port, require_binary, wait_until_answers
from tests.harness.sockets import hear_reply, sign_in_cookie

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

START_TIMEOUT = 240.0  # migrations on a fresh SQLite file, then Daphne, on a busy machine


@dataclass
class QuickStart:
    checkout: Path
    url: str
    log_path: Path
    proc: subprocess.Popen[bytes]

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def clean_copy(destination: Path) -> Path:
    """The tracked files as they are in the working tree, nothing else (no database, no
    static root, no .env), and the test run's virtualenv as `.venv`."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True, timeout=60
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():  # a file deleted in the working tree is not copied
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    (destination / ".venv").symlink_to(Path(sys.prefix))
    return destination


def make_run(checkout: Path, port: int) -> QuickStart:
    """`make run PORT=port` as a person types it: the machine's environment with nothing of
    Parley's set (embedded mode), in its own process group."""
    make = require_binary("make")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(checkout)),
        "LANG": "C.UTF-8",
    }
    log_path = checkout / f"make-run-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [make, "-o", ".venv/.installed", "run", f"PORT={port}"],
            cwd=checkout,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started = QuickStart(checkout, f"http://127.0.0.1:{port}", log_path, proc)
    try:
        wait_until_answers(f"{started.url}/accounts/login/", timeout=START_TIMEOUT, proc=proc)
    except BaseException:
        stop(started)
        print(started.output())
        raise
    return started


def stop(started: QuickStart) -> None:
    if started.proc.poll() is None:
        os.killpg(started.proc.pid, signal.SIGTERM)
        try:
            started.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(started.proc.pid, signal.SIGKILL)
            started.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def quick_start(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuickStart]:
    checkout = clean_copy(tmp_path_factory.mktemp("parley-clean-checkout"))
    started = make_run(checkout, free_port())
    try:
        yield started
    finally:
        stop(started)


def printed_account(output: str) -> tuple[str, str]:
    found = re.search(r"username: (\S+)\s+password: (\S+)", output)
    assert found, f"make run printed no account:\n{output}"
    return found.group(1), found.group(2)


def test_make_run_prints_an_admin_account_that_signs_in_and_reaches_the_admin(
    quick_start: QuickStart,
) -> None:
    output = quick_start.output()
    assert f"Parley is starting on {quick_start.url}/" in output, output
    assert (quick_start.checkout / "db.sqlite3").is_file()  # "migrates a SQLite database"
    username, password = printed_account(output)
    cookie = sign_in_cookie(quick_start.url, username, password)
    with httpx.Client(base_url=quick_start.url, headers={"Cookie": cookie}, timeout=30) as web:
        admin = web.get("/admin/")
        assert admin.status_code == 200 and "Site administration" in admin.text, admin.text[:300]


def test_an_account_created_at_signup_is_signed_in_on_the_chat_page(
    quick_start: QuickStart,
) -> None:
    """README: "Sign in with the printed account, or create one at `/accounts/signup/`"."""
    base = quick_start.url
    password = "a long and unguessable passphrase 42"
    with httpx.Client(base_url=base, timeout=30) as browser:
        form = browser.get("/accounts/signup/")
        assert form.status_code == 200 and "<form" in form.text
        made = browser.post(
            "/accounts/signup/",
            data={
                "username": "quickstart-newcomer",
                "email": "newcomer@example.com",
                "password1": password,
                "password2": password,
                "csrfmiddlewaretoken": browser.cookies["csrftoken"],
            },
            headers={"Referer": f"{base}/accounts/signup/", "Origin": base},
        )
        assert made.status_code == 302, made.text[:500]
        page = browser.get(made.headers["location"])
        assert page.status_code == 200 and 'id="composer-text"' in page.text
    assert sign_in_cookie(base, "quickstart-newcomer", password)


async def test_the_quick_starts_local_model_answers_the_signed_in_page(
    quick_start: QuickStart,
) -> None:
    """README: "generation on the server's own event loop, and a real local model —
    SmolLM2-135M-Instruct … run by llama.cpp"."""
    username, password = printed_account(quick_start.output())
    cookie = sign_in_cookie(quick_start.url, username, password)
    ws_url = f"{quick_start.url.replace('http://', 'ws://')}/ws/chat/"
    async with connect(
        ws_url,
        origin=Origin(quick_start.url),
        additional_headers={"Cookie": cookie},
        open_timeout=30,
        close_timeout=2,
    ) as ws:
        frame = {
            "type": "send",
            "conversation": None,
            "text": "Say hello.",
            "client_id": uuid.uuid4().hex,
            "max_tokens": 12,
        }
        await ws.send(json.dumps(frame))
        heard = await hear_reply(ws, timeout=300)
    heard.check_contiguous()
    assert heard.final is not None and heard.final["provider"] == "local", heard.final
    assert heard.final["status"] in ("complete", "incomplete") and heard.text.strip()

"""nginx running the repository's own nginx.conf, pointed at Daphne replicas on loopback."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.harness.processes import REPO, ProcessGroup, wait_until_answers

_UPSTREAM = r"^(\s*)server daphne-\d+:8000\b"


def nginx_conf(
    source: str, *, upstream_ports: list[int], listen_port: int, static_root: Path, prefix: Path
) -> str:
    """The repository's nginx.conf for loopback processes; every other line unchanged.

    The first upstream `server daphne-N:8000` line is the template for one line per port (same
    max_fails/fail_timeout), the others go; `listen 80 …;` and the static alias are rewritten and
    temp paths under `prefix` added. Fails loudly when the file no longer has the shape this
    expects, rather than testing a config that production would not run.
    """
    lines = source.splitlines(keepends=True)
    servers = [i for i, line in enumerate(lines) if re.match(_UPSTREAM, line)]
    if not servers or servers != list(range(servers[0], servers[0] + len(servers))):
        raise AssertionError("nginx.conf: expected consecutive `server daphne-N:8000` lines")
    template = lines[servers[0]]
    expanded = [
        re.sub(r"daphne-\d+:8000", f"127.0.0.1:{port}", template) for port in upstream_ports
    ]
    text = "".join(lines[: servers[0]] + expanded + lines[servers[-1] + 1 :])
    replacements = [
        (r"^(\s*)listen 80( reuseport)?;", rf"\g<1>listen 127.0.0.1:{listen_port}\g<2>;"),
        (r"^(\s*)alias /app/staticfiles/;", rf"\g<1>alias {static_root}/;"),
    ]
    for pattern, replacement in replacements:
        text, count = re.subn(pattern, replacement, text, flags=re.M)
        if count != 1:
            raise AssertionError(f"nginx.conf: expected one line matching {pattern!r}")
    temp_paths = "".join(
        f"    {kind}_temp_path {prefix / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text, count = re.subn(r"^http \{\n", f"http {{\n{temp_paths}", text, flags=re.M)
    if count != 1:
        raise AssertionError("nginx.conf: expected one `http {` line")
    return text


def start_nginx(
    group: ProcessGroup, name: str, binary: str, conf: Path, prefix: Path, port: int
) -> subprocess.Popen[bytes]:
    """nginx in the foreground with its own prefix and pid file; returns once it answers."""
    test = subprocess.run(
        [
            binary,
            "-t",
            "-p",
            str(prefix),
            "-c",
            str(conf),
            "-e",
            "stderr",
            "-g",
            f"pid {prefix / 'nginx.pid'};",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if test.returncode != 0:
        raise RuntimeError(f"nginx -t failed:\n{test.stderr}")
    proc = group.start(
        name,
        [
            binary,
            "-p",
            str(prefix),
            "-c",
            str(conf),
            "-e",
            "stderr",
            "-g",
            f"daemon off; pid {prefix / 'nginx.pid'};",
        ],
        os.environ,
    )
    wait_until_answers(f"http://127.0.0.1:{port}/nginx-health", timeout=20, proc=proc)
    return proc


def start_repository_nginx(
    group: ProcessGroup,
    binary: str,
    *,
    workdir: Path,
    upstream_ports: list[int],
    listen_port: int,
    static_root: Path,
) -> subprocess.Popen[bytes]:
    """The repository's nginx.conf, rewritten for loopback under `workdir`/nginx, started."""
    prefix = workdir / "nginx"
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    conf.write_text(
        nginx_conf(
            (REPO / "nginx.conf").read_text(),
            upstream_ports=upstream_ports,
            listen_port=listen_port,
            static_root=static_root,
            prefix=prefix,
        )
    )
    return start_nginx(group, "nginx", binary, conf, prefix, listen_port)

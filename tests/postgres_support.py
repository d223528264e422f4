"""A throwaway PostgreSQL cluster for tests: initdb in a temporary folder, started on 127.0.0.1 at a free port,
stopped and deleted afterwards. The server refuses to run as root, so as root it runs as the `postgres` user (the
Debian package creates it) or `nobody`. Skips, saying why, only where no server binaries exist."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

DATABASE = "optuna"
USER = "sepvit"


def server_binaries() -> Path | None:
    """The folder holding initdb and pg_ctl (Debian keeps them out of PATH, in /usr/lib/postgresql/<v>/bin)."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_user() -> str | None:
    """None: run as this user; else the unprivileged account to run the server as."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    pytest.skip("running as root and neither a 'postgres' nor a 'nobody' account exists to start PostgreSQL as")


def _as(user: str | None, command: list[str]) -> list[str]:
    return command if user is None else ["runuser", "-u", user, "--", *command]


class Cluster:
    def __init__(self, binaries: Path):
        self.binaries, self.user, self.port = binaries, _server_user(), _free_port()
        # not under pytest's tmp_path: /tmp/pytest-of-root is private to root, the server user must enter
        self.folder = Path(tempfile.mkdtemp(prefix="sepvit-pg-"))
        self.data = self.folder / "data"
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)

    def run(self, *command: str) -> subprocess.CompletedProcess:
        return subprocess.run(_as(self.user, [str(self.binaries / command[0]), *command[1:]]), capture_output=True,
                              text=True, timeout=120, cwd=self.folder)

    def start(self) -> None:
        done = self.run("initdb", "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync")
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr[-2000:]}")
        options = f"-h 127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off -c max_connections=50"
        done = self.run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-o", options, "-w",
                        "-t", "60", "start")
        if done.returncode != 0:
            log = (self.folder / "server.log").read_text() if (self.folder / "server.log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {done.stderr[-1000:]} {log[-2000:]}")
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={USER} dbname=postgres", autocommit=True) as c:
            c.execute(f"CREATE DATABASE {DATABASE}")

    def stop(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    def accepts_connections(self) -> bool:
        with socket.socket() as s:
            s.settimeout(2)
            return s.connect_ex(("127.0.0.1", self.port)) == 0


@pytest.fixture(scope="module")
def postgres_cluster():
    binaries = server_binaries()
    if binaries is None:
        pytest.skip("no PostgreSQL server here (initdb/pg_ctl not found; `apt-get install postgresql`, as .ci/run does)")
    cluster = Cluster(binaries)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()

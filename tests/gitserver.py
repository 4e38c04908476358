"""Real git servers on loopback for tests and benchmarks: smart HTTP with basic auth, and OpenSSH.

* `GitHttpServer`: git's own `git http-backend` (the CGI every forge's smart-HTTP side speaks)
  behind a small threaded HTTP server that requires basic auth, as a private repository on
  GitHub, GitLab or Gitea does: no or wrong credentials get 401 with a Basic challenge, an
  account without write access gets 403 on receive-pack (push), a repository that does not
  exist gets 404. libgit2 pushes with `Transfer-Encoding: chunked`; CGI needs a length, so the
  body is de-chunked here before it reaches http-backend.
* `SshServer`: Debian's `/usr/sbin/sshd` on a free port with a temporary host key and one
  authorized client key (scripts/test installs openssh-server). git-upload-pack and
  git-receive-pack run as the login shell's commands, as on any git host over SSH.

Both serve bare repositories below one folder (`root`): `http://127.0.0.1:PORT/<rel>` and
`ssh://USER@127.0.0.1:PORT/<root>/<rel>`.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HTTP_BACKEND = "/usr/lib/git-core/git-http-backend"
SSHD = "/usr/sbin/sshd"


@dataclass(frozen=True)
class Account:
    """Who may use the server: `password` (a token), under `username` (None: any non-empty name)."""

    password: str
    username: str | None = None
    write: bool = True

    def matches(self, username: str, password: str) -> bool:
        if password != self.password or not username:
            return False
        return self.username is None or username == self.username


@dataclass
class GitHttpServer:
    """`git http-backend` behind basic auth on 127.0.0.1 (see the module docstring)."""

    root: Path
    accounts: list[Account] = field(default_factory=list)
    #: (method, path, username presented, status) of every request, for assertions.
    log: list[tuple[str, str, str, int]] = field(default_factory=list)
    #: Every Authorization header value seen (tests check what clients sent).
    auth_seen: list[str] = field(default_factory=list)
    #: Paths of requests whose body came with Transfer-Encoding: chunked (libgit2's pushes do).
    chunked: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_http_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    def start(self) -> GitHttpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> GitHttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def url(self, rel: str) -> str:
        """The clone URL of the repository at `root/rel` (no credentials in it)."""
        return f"{self.base_url}/{rel.lstrip('/')}"

    def _authorize(self, header: str, push: bool) -> tuple[int, str]:
        """(0 = allowed, else the HTTP status), and the username presented."""
        if not header.lower().startswith("basic "):
            return 401, ""
        try:
            user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return 401, ""
        for account in self.accounts:
            if account.matches(user, password):
                return (403 if push and not account.write else 0), user
        return 401, user


def _dechunk(rfile: Any) -> bytes:
    out = bytearray()
    while True:
        size_line = rfile.readline(65537)
        size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return bytes(out)
        out += rfile.read(size)
        rfile.readline(3)  # the CRLF after each chunk


def _make_http_handler(server: GitHttpServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        wbufsize = -1
        disable_nagle_algorithm = True

        def _reply(self, status: int, body: bytes = b"", headers: Iterable[tuple[str, str]] = ()) -> None:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _handle(self) -> None:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = _dechunk(self.rfile)
                with server._lock:
                    server.chunked.append(self.path)
            else:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            push = parts.path.endswith("/git-receive-pack") or "service=git-receive-pack" in parts.query
            header = self.headers.get("Authorization", "")
            if header:
                with server._lock:
                    server.auth_seen.append(header)
            status, user = server._authorize(header, push)
            if status:
                with server._lock:
                    server.log.append((self.command, self.path, user, status))
                challenge = [("WWW-Authenticate", 'Basic realm="git"')] if status == 401 else []
                self._reply(status, b"authentication required\n" if status == 401 else b"forbidden\n",
                            [("Content-Type", "text/plain"), *challenge])
                return
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "GIT_PROJECT_ROOT": str(server.root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": "http.receivepack",
                "GIT_CONFIG_VALUE_0": "true",
                "HOME": str(server.root),
                "REQUEST_METHOD": self.command,
                "PATH_INFO": parts.path,
                "QUERY_STRING": parts.query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "REMOTE_USER": user,
                "REMOTE_ADDR": self.client_address[0],
                "SERVER_PROTOCOL": "HTTP/1.1",
                "GATEWAY_INTERFACE": "CGI/1.1",
            }
            if self.headers.get("Content-Encoding"):
                env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
            if self.headers.get("Git-Protocol"):
                env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
            proc = subprocess.run([HTTP_BACKEND], input=body, env=env, capture_output=True, check=False)
            head, _, payload = proc.stdout.partition(b"\r\n\r\n")
            if not _:
                head, _, payload = proc.stdout.partition(b"\n\n")
            status = 200
            headers: list[tuple[str, str]] = []
            for line in head.decode("latin-1").splitlines():
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.strip().split()[0])
                elif name:
                    headers.append((name.strip(), value.strip()))
            if proc.returncode != 0 and not head:
                status, payload = 500, proc.stderr
            with server._lock:
                server.log.append((self.command, self.path, user, status))
            self._reply(status, payload, headers)

        do_GET = do_POST = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


# --------------------------------------------------------------------------------------
# OpenSSH
# --------------------------------------------------------------------------------------


def ssh_keygen(path: Path, *, passphrase: str = "", comment: str = "meshgen-test") -> Path:
    """A new ed25519 key pair at `path` / `path`.pub; returns the private key's path."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", comment, "-f", str(path)],
                   check=True, capture_output=True)
    return path


class SshServer:
    """sshd on 127.0.0.1:free port; `client_key` may log in as the current user.

    `known_hosts` is a known_hosts file that trusts exactly this server's host key.
    """

    def __init__(self, workdir: Path, root: Path) -> None:
        from helpers import free_port, wait_for

        if not Path(SSHD).exists():
            raise RuntimeError(f"{SSHD} is missing: install openssh-server (scripts/test does)")
        self.root = Path(root)
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host_key = ssh_keygen(self.dir / "host_ed25519")
        self.client_key = ssh_keygen(self.dir / "client_ed25519")
        shutil.copy(self.client_key.with_suffix(".pub"), self.dir / "authorized_keys")
        self.port = free_port()
        self.user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True,
                                                             check=True).stdout.strip()
        config = self.dir / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
            f"PidFile {self.dir / 'sshd.pid'}", f"AuthorizedKeysFile {self.dir / 'authorized_keys'}",
            "UsePAM no", "StrictModes no", "PubkeyAuthentication yes", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password", "LogLevel ERROR",
            "MaxStartups 100:30:200", "",
        ]))
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory, absent until sshd ran once
        self._proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL,
                                      stderr=open(self.dir / "sshd.log", "wb"))  # noqa: SIM115
        pub = self.host_key.with_suffix(".pub").read_text().split()
        self.known_hosts = self.dir / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {pub[0]} {pub[1]}\n")

        def up() -> bool:
            import socket

            if self._proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.dir / 'sshd.log').read_text()}")
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.port)) == 0

        wait_for(up, 10, "sshd to listen")

    def url(self, rel: str) -> str:
        """`ssh://user@127.0.0.1:PORT/abs/path` (scp-like `user@host:path` cannot name a port)."""
        return f"ssh://{self.user}@127.0.0.1:{self.port}{self.root / rel}"

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __enter__(self) -> SshServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

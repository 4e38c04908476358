"""`meshgen doctor [ROOT]`: check every remote meshgen.yaml and the MESHGEN_* settings configure,
with the credentials they configure, and say for each what works or what to fix.

One line per check: `✔ name: what was verified`, `✘ name: what failed and the fix`, or
`– name: not configured` (nothing to check). Nothing is written anywhere: the push checks ask the
servers for push access without sending a ref update (meshgen.gitops.transport.check_push), the
forge check reads the repository and the credential's permissions, Argo CD and Prometheus are
only read. Every line is scrubbed of every secret meshgen knows of, on top of the scrubbing each
module already does, so the output can be pasted into a ticket.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import click

from meshgen.blueprint.config import Config
from meshgen.settings import Settings

Status = Literal["ok", "fail", "skip"]
MARK: dict[Status, str] = {"ok": "✔", "fail": "✘", "skip": "–"}
#: Seconds for each network check (HTTP calls; Redis connect and reply).
TIMEOUT = 10.0
#: Only what meshgen manages: proves the credential can list Applications without reading them all.
ARGOCD_SELECTOR = "app.kubernetes.io/managed-by=meshgen"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    message: str

    def line(self) -> str:
        return f"{MARK[self.status]} {self.name}: {self.message}"


class _Failed(Exception):
    """A check failed with a message that already says what to do."""


def redact_url(url: str) -> str:
    """`url` without a password (redis://:secret@host → redis://:***@host)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class _Doctor:
    def __init__(self, root: Path, settings: Settings, timeout: float) -> None:
        self.root = root
        self.settings = settings
        self.timeout = timeout
        self.config: Config | None = None
        self.forge: Any = None
        self.secrets: list[str] = [s.get_secret_value() for s in (
            settings.forge_token, settings.argocd_token, settings.api_read_tokens, settings.api_write_tokens,
            settings.blueprints_token) if s is not None and s.get_secret_value()]

    # -- plumbing ------------------------------------------------------------------------------

    def run(self, name: str, check: Callable[[], str]) -> Check:
        """Run one check: its sentence (✔), _Skip (– not configured) or a failure (✘, the message)."""
        from meshgen.argocd.source import ArgoCDError
        from meshgen.diagnostics import BlueprintError
        from meshgen.forges.base import ForgeError
        from meshgen.gitops.envrepo import EnvRepoError

        try:
            message = check()
        except _Skip as skip:
            return Check(name, "skip", self.scrub(str(skip)))
        except BlueprintError as exc:
            return Check(name, "fail", self.scrub("; ".join(str(d) for d in exc.diagnostics)))
        except (_Failed, ForgeError, EnvRepoError, ArgoCDError) as exc:
            return Check(name, "fail", self.scrub(str(exc)))
        except Exception as exc:  # noqa: BLE001  # doctor reports, it does not crash on one remote
            return Check(name, "fail", self.scrub(f"unexpected {type(exc).__name__}: {exc}"))
        return Check(name, "ok", self.scrub(message))

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "<redacted>")
        return _one_line(text)

    # -- checks --------------------------------------------------------------------------------

    def checks(self) -> Iterator[Check]:
        config = self.run("meshgen.yaml", self.check_config)
        yield config
        if self.config is not None:
            yield self.run("forge API", self.check_forge)
            yield from self.env_repo_checks()
        yield self.run("blueprints repository", self.check_blueprints)
        if self.config is not None:
            yield self.run("Argo CD", self.check_argocd)
        yield self.run("Redis", self.check_redis)
        if self.config is not None:
            yield from self.prometheus_checks()

    def check_config(self) -> str:
        from meshgen.blueprint.loading import load_config

        self.config, _ = load_config(self.root)
        er = self.config.env_repo
        return (f"{len(self.config.environments)} environment(s), forge "
                f"{er.forge.kind}, environment repository {er.url} (branch {er.branch})")

    def check_forge(self) -> str:
        from meshgen.forges.base import Identity
        from meshgen.gitops.sync import forge_from_config
        from meshgen.giturls import local_path

        assert self.config is not None
        er = self.config.env_repo
        local = local_path(er.url, self.root)
        if er.forge.kind == "local":
            if local is None:
                from meshgen.forges.registry import remote_kinds_text

                raise _Failed(f"forge kind 'local' needs envRepo.url to be a local path, not {er.url}; set "
                              f"envRepo.forge.kind to {remote_kinds_text()}")
            if not local.exists():
                return f"local pull requests in {local} (created by the first sync)"
        options = {"timeout": self.timeout, "max_attempts": 2, "max_wait": 2.0, "backoff": 0.5}
        self.forge = forge_from_config(self.root, self.config, self.settings, local_path=local,
                                       identity=Identity(er.author.name, er.author.email),
                                       options=None if er.forge.kind == "local" else options)
        self._remember_forge_token()
        return str(self.forge.check_access())

    def _remember_forge_token(self) -> None:
        credential = self.forge.git_credential() if self.forge is not None else None
        if credential is not None:
            token = credential.token()
            if token:
                self.secrets.append(token)

    def env_repo_checks(self) -> Iterator[Check]:
        from meshgen.giturls import local_path

        assert self.config is not None
        er = self.config.env_repo
        local = local_path(er.url, self.root)
        if local is not None:
            yield self.run("environment repository", lambda: self._local_repo(local, er.branch, created_by_sync=True))
            return
        access: list[Any] = []

        def fetch() -> str:
            from meshgen.gitops.transport import env_repo_access, ls_remote

            assert self.config is not None
            remote = env_repo_access(self.root, self.config, self.settings, self.forge)
            assert remote is not None  # not a local path
            if remote.credential is not None:
                self.secrets.append(remote.credential.token())
            line = self._branch_line(remote.url, ls_remote(remote), er.branch, "envRepo.branch")
            access.append(remote)
            return line

        def push() -> str:
            from meshgen.gitops.transport import check_push

            if not access:
                raise _Skip("not checked: fetching failed (see above)")
            check_push(access[0])
            return f"{access[0].url}: the server accepts pushes with these credentials (nothing was pushed)"

        yield self.run("environment repository (fetch)", fetch)
        yield self.run("environment repository (push)", push)

    def check_blueprints(self) -> str:
        from meshgen.gitops.blueprints import blueprints_remote
        from meshgen.gitops.transport import blueprints_access, ls_remote

        url = self.settings.blueprints_url
        if not url:
            raise _Skip(f"MESHGEN_BLUEPRINTS_URL is not set: syncs render {self.root} as it is on disk")
        remote_url = blueprints_remote(url, self.root)
        access = blueprints_access(remote_url, self.settings)
        branch = self.settings.blueprints_branch
        if access is None:
            path = Path(remote_url.removeprefix("file://"))
            return self._local_repo(path, branch, created_by_sync=False, setting="MESHGEN_BLUEPRINTS_BRANCH")
        if access.credential is not None:
            self.secrets.append(access.credential.token())
        return self._branch_line(access.url, ls_remote(access), branch, "MESHGEN_BLUEPRINTS_BRANCH")

    def check_argocd(self) -> str:
        from meshgen.argocd.source import make_source

        assert self.config is not None
        cfg = self.config.argocd
        if cfg is None:
            raise _Skip("meshgen.yaml has no argocd section: rollouts stop at awaiting-sync")
        source = make_source(cfg, self.settings)
        try:
            apps = source.list(ARGOCD_SELECTOR)
        finally:
            source.close()
        where = cfg.url if cfg.mode == "rest" else f"Kubernetes namespace {cfg.namespace}"
        return f"{where} ({cfg.mode}): {len(apps)} application(s) labelled {ARGOCD_SELECTOR} readable"

    def check_redis(self) -> str:
        import redis

        url = self.settings.redis_url
        shown = redact_url(url)
        if url.startswith(("redis://", "rediss://", "unix://")):
            parts = urlsplit(url)
            if parts.password:
                self.secrets.append(parts.password)
        try:
            client = redis.Redis.from_url(url, socket_connect_timeout=self.timeout, socket_timeout=self.timeout)
        except ValueError as exc:
            raise _Failed(f"MESHGEN_REDIS_URL ({shown}) is not a Redis URL ({exc}); use redis://HOST:6379/0") from None
        try:
            client.ping()
        except redis.AuthenticationError:
            raise _Failed(f"{shown}: Redis refused the credentials; fix the password in MESHGEN_REDIS_URL") from None
        except redis.RedisError as exc:
            raise _Failed(f"{shown}: no answer to PING ({type(exc).__name__}: {exc}); start Redis there or point "
                          "MESHGEN_REDIS_URL at it (the worker and the API need it; `meshgen up` and `meshgen sync` "
                          "run without it, keeping no job records)") from None
        finally:
            client.close()
        return f"{shown} answers PING"

    def prometheus_checks(self) -> Iterator[Check]:
        """One line per environment: the Prometheus its canaries are measured on (its own, else the
        top-level one), reached with the configured bearer token."""
        assert self.config is not None
        config = self.config
        if all(config.prometheus_for(env) is None for env in config.environments):
            yield self.run("Prometheus", self._no_prometheus)
            return
        for env in config.environments:
            yield self.run(f"Prometheus ({env})", lambda env=env: self.check_prometheus(env))  # type: ignore[misc]

    @staticmethod
    def _no_prometheus() -> str:
        raise _Skip("meshgen.yaml has no prometheus.url")

    def check_prometheus(self, env: str) -> str:
        from meshgen.canary.prometheus import Prometheus, PrometheusError

        assert self.config is not None
        section = self.config.prometheus_for(env)
        if section is None:
            raise _Skip(f"neither environments.{env}.prometheus nor a top-level prometheus: canaries in {env} "
                        "cannot be measured")
        where = "environments." + env + ".prometheus" if self.config.environments[env].prometheus else "prometheus"
        try:
            client = Prometheus.from_settings(section, self.root, timeout=self.timeout)
        except PrometheusError as exc:
            raise _Failed(f"{where}: {exc}") from None
        if client.token:
            self.secrets.append(client.token)
        line = prometheus_buildinfo(client.url, timeout=self.timeout, token=client.token)
        try:
            value = client.query("vector(1)")
        except PrometheusError as exc:
            raise _Failed(f"{where}: {exc}") from None
        if value != 1.0:
            raise _Failed(f"{where}: {client.url} answered vector(1) with {value}, not 1; is prometheus.url "
                          "Prometheus' own query API?")
        auth = (f"bearer token from {'$' + section.token_env if section.token_env else section.token_file}"
                if client.token else "no token")
        return f"{line}, queries accepted ({where}, {auth})"

    # -- shared --------------------------------------------------------------------------------

    @staticmethod
    def _branch_line(url: str, refs: dict[str, str], branch: str, setting: str) -> str:
        sha = refs.get(f"refs/heads/{branch}")
        if sha is None:
            heads = sorted(name[len("refs/heads/"):] for name in refs if name.startswith("refs/heads/"))
            raise _Failed(f"{url}: reachable with these credentials, but it has no branch {branch!r} (branches: "
                          f"{', '.join(heads[:10]) or 'none'}); push that branch or set {setting}")
        return f"{url}: reachable with these credentials, branch {branch} at {sha[:12]}"

    @staticmethod
    def _local_repo(path: Path, branch: str, *, created_by_sync: bool, setting: str = "envRepo.branch") -> str:
        import pygit2

        if not path.exists():
            if created_by_sync:
                return f"{path}: a local repository, created by the first sync"
            raise _Failed(f"{path} does not exist; set MESHGEN_BLUEPRINTS_URL to the blueprints repository")
        try:
            repo = pygit2.Repository(str(path))
        except pygit2.GitError:
            raise _Failed(f"{path} is not a git repository; point the setting at a repository") from None
        if repo.references.get(f"refs/heads/{branch}") is None:
            raise _Failed(f"{path}: no branch {branch!r}; create it or set {setting}")
        return f"{path}: a local repository, branch {branch} present"


class _Skip(Exception):
    """Nothing to check (not configured); the message says so."""


def prometheus_buildinfo(url: str, *, timeout: float = TIMEOUT, token: str | None = None) -> str:
    """GET {url}/api/v1/status/buildinfo (Prometheus HTTP API): a sentence, or _Failed with the fix."""
    import httpx

    shown = redact_url(url)
    endpoint = url.rstrip("/") + "/api/v1/status/buildinfo"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        # No redirects: a bearer token must not follow one to another host.
        response = httpx.get(endpoint, timeout=timeout, headers=headers, follow_redirects=token is None)
    except httpx.HTTPError as exc:
        raise _Failed(f"{shown} is unreachable ({type(exc).__name__}: {exc}); check prometheus.url and that "
                      "Prometheus runs there") from None
    if response.status_code in (401, 403):
        raise _Failed(f"{shown} refused /api/v1/status/buildinfo (HTTP {response.status_code}) "
                      f"{'with the configured token' if token else 'without a token'}; set prometheus.tokenEnv or "
                      "prometheus.tokenFile to a token it accepts")
    try:
        body = response.json() if response.status_code == 200 else None
    except ValueError:
        body = None
    if not isinstance(body, dict) or body.get("status") != "success" or not isinstance(body.get("data"), dict):
        raise _Failed(f"{shown} answered HTTP {response.status_code} to /api/v1/status/buildinfo, not Prometheus' "
                      "API; check prometheus.url (the server root, e.g. http://prometheus:9090)")
    version = str(body["data"].get("version", "?"))
    if not re.fullmatch(r"[\w.+-]{1,40}", version):
        version = "?"
    return f"{shown}: Prometheus {version} answers"


def run_checks(root: Path, settings: Settings, *, timeout: float = TIMEOUT) -> list[Check]:
    """Every check, in order; a failed meshgen.yaml skips the checks that need it."""
    doctor = _Doctor(root, settings, timeout)
    try:
        return list(doctor.checks())
    finally:
        close = getattr(doctor.forge, "close_connections", None)
        if close is not None:
            close()


def _print(checks: Iterable[Check]) -> bool:
    ok = True
    for check in checks:
        click.echo(check.line())
        ok = ok and check.status != "fail"
    return ok


@click.command("doctor")
@click.argument("root", type=click.Path(file_okay=False, path_type=Path), default=".", required=False)
def doctor(root: Path) -> None:
    """Check every configured remote with its credentials: one ✔/✘ line each, exit 1 if any fails.

    The environment repository (fetch, and push permission without pushing), the blueprints
    repository (MESHGEN_BLUEPRINTS_URL), the forge API (the credential can open pull requests),
    Argo CD, Redis and each environment's Prometheus (with its bearer token), each when configured.
    """
    if not _print(run_checks(root, Settings(root=root))):
        raise SystemExit(1)

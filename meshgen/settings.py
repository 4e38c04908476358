"""Process settings from the environment (`MESHGEN_*`), next to meshgen.yaml.

meshgen.yaml says what the platform wants (environments, repositories, Argo CD); these
settings say how this process runs and where its secrets are. Every secret can be given
as a value or as a file (`MESHGEN_X_FILE`, e.g. a mounted Kubernetes Secret); a file wins.
Secrets are SecretStr, so they never print in a repr, a log line or an error.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_SECRET_FIELDS = (
    "api_read_tokens",
    "api_write_tokens",
    "forge_token",
    "argocd_token",
    "blueprints_forge_token",
)


def webhook_kinds() -> list[str]:
    """The registered forges that send webhooks, each with its secret MESHGEN_WEBHOOK_SECRET_<KIND>."""
    from meshgen.forges.registry import FORGES

    return [kind for kind, spec in FORGES.items() if spec.webhook is not None]


def _read_secret(name: str, path: str) -> str:
    from meshgen.forges.base import read_secret_file  # no FIFO, no huge file

    try:
        return read_secret_file(Path(path)).decode("utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:  # the reason only, never the content
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ValueError(f"MESHGEN_{name.upper()}_FILE={path}: cannot read it: {reason}; "
                         "point it at the file holding the secret") from None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MESHGEN_", extra="ignore", frozen=True)

    root: Path = Field(default=Path("."), description="The blueprints repository (meshgen.yaml + blueprints/).")
    state_dir: Path = Field(default=Path(".meshgen"), description="Mirrors, caches and the embedded environment repository; relative to root.")
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="Celery broker, result backend and job records.")
    redis_prefix: str = Field(default="meshgen:", description="Prefix of every Redis key meshgen writes.")
    host: str = Field(default="127.0.0.1", description="`meshgen serve` / `meshgen up` listen address.")
    port: int = Field(default=8080, description="`meshgen serve` / `meshgen up` port.")
    api_read_tokens: SecretStr | None = Field(default=None, description="Comma-separated bearer tokens with read scope.")
    api_write_tokens: SecretStr | None = Field(default=None, description="Comma-separated bearer tokens with write scope (implies read).")
    api_public_reads: bool = Field(default=False, description="Serve read endpoints and the status page without a token.")
    # One per registered forge with webhooks (meshgen.forges.registry): MESHGEN_WEBHOOK_SECRET_<KIND>
    # or MESHGEN_WEBHOOK_SECRET_<KIND>_FILE, or the keyword webhook_secret_<kind>; see webhook_secret().
    # (kind, secret) pairs, a tuple so the frozen settings stay hashable (a cache key of the API's Celery app).
    webhook_secrets: tuple[tuple[str, SecretStr], ...] = Field(default=(), description="Webhook secrets by forge kind.")
    forge_token: SecretStr | None = Field(default=None, description="Token for the forge of the environment repository.")
    argocd_token: SecretStr | None = Field(default=None, description="Bearer token for Argo CD's REST API.")
    github_app_private_key_file: Path | None = Field(default=None, description="PEM private key of the GitHub App in meshgen.yaml envRepo.forge.app (a mounted secret).")
    log_level: str = Field(default="INFO", description="Python logging level.")
    # Sync worker and webhooks (added with the worker; all optional, defaults suit one replica).
    blueprints_branch: str = Field(default="main", description="Only pushes to this branch of the blueprints repository trigger a sync.")
    blueprints_repo: str | None = Field(default=None, description="owner/name (GitLab: group/project) a webhook must come from; unset accepts any.")
    blueprints_url: str | None = Field(default=None, description="Git URL or local path of the blueprints repository: every sync fetches it and renders the pushed commit of blueprints_branch; unset renders root as it is on disk.")
    queue: str = Field(default="meshgen", description="Celery queue the sync tasks go to.")
    sync_debounce: float = Field(default=0.3, description="Seconds a triggered sync waits so a burst of pushes becomes one PR update.")
    lock_ttl: float = Field(default=30.0, description="Expiry (s) of the environment-repository writer lock; renewed while a sync runs.")
    canary_tick: float = Field(default=30.0, gt=0, description="Seconds between canary controller passes (Celery beat's meshgen.canary.tick, `meshgen up`'s timer); every sync also runs one.")
    lock_wait: float = Field(default=600.0, description="How long (s) a sync waits for another writer before the task is retried.")
    visibility_timeout: int = Field(default=3600, description="Seconds before Redis redelivers an unacknowledged task (a killed worker's task).")
    webhook_dedupe_ttl: int = Field(default=86400, description="Seconds a webhook delivery id is remembered to ignore replays.")
    # Git credentials (meshgen.gitops.transport). Token and key files are re-read for every fetch and push.
    blueprints_token: SecretStr | None = Field(default=None, description="HTTPS token for MESHGEN_BLUEPRINTS_URL (the password; MESHGEN_BLUEPRINTS_TOKEN_FILE: read per fetch).")
    blueprints_token_file: Path | None = Field(default=None, description="File holding the HTTPS token of the blueprints repository, re-read for every fetch.")
    blueprints_username: str = Field(default="x-access-token", min_length=1, description="HTTPS username for the blueprints token (GitHub x-access-token; GitLab OAuth tokens: oauth2; others: any).")
    git_ssh_key_file: Path | None = Field(default=None, description="Private key for ssh:// and git@host:path remotes (environment and blueprints repositories).")
    git_ssh_key_passphrase_file: Path | None = Field(default=None, description="File holding the SSH key's passphrase, if it has one.")
    git_known_hosts_file: Path | None = Field(default=None, description="known_hosts file the SSH servers' host keys are checked against; unknown or changed keys are refused.")
    # Plans on blueprints pull requests (issue 10): where to comment and set the meshgen/plan status.
    blueprints_forge_url: str | None = Field(default=None, description="API root of the blueprints repository's forge (https://api.github.com, https://HOST/api/v3, a GitLab or Gitea root); with blueprints_url, pull_request webhooks get a plan comment and a meshgen/plan commit status.")
    blueprints_forge_token: SecretStr | None = Field(default=None, description="Token for the blueprints repository's forge (comments and commit statuses).")

    @field_validator("github_app_private_key_file", mode="before")
    @classmethod
    def _empty_path_is_unset(cls, value: object) -> object:
        # MESHGEN_GITHUB_APP_PRIVATE_KEY_FILE= (empty) means "not set", not the current directory.
        return None if value == "" else value

    @model_validator(mode="before")
    @classmethod
    def _secret_files(cls, data: object) -> object:
        """`MESHGEN_<NAME>_FILE=/path` reads the secret from a file (trailing newline dropped)."""
        import os

        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name in _SECRET_FIELDS:
            path = os.environ.get(f"MESHGEN_{name.upper()}_FILE")
            if path:
                data[name] = _read_secret(name, path)
        secrets = dict(data.get("webhook_secrets") or ())  # kind -> secret (a model_dump() given back)
        for kind in webhook_kinds():
            # As for the declared secrets, a file wins; then the keyword, then the variable (unset if empty).
            name = f"webhook_secret_{kind}"
            path, value = os.environ.get(f"MESHGEN_{name.upper()}_FILE"), os.environ.get(f"MESHGEN_{name.upper()}")
            given = data.pop(name, None)
            if path:
                secrets[kind] = _read_secret(name, path)
            elif given is not None:
                secrets[kind] = given
            elif value and kind not in secrets:
                secrets[kind] = value
        data["webhook_secrets"] = tuple(sorted(secrets.items()))
        return data

    def webhook_secret(self, kind: str) -> SecretStr | None:
        """The webhook secret of forge `kind` (MESHGEN_WEBHOOK_SECRET_<KIND>[_FILE]), if set."""
        return dict(self.webhook_secrets).get(kind)

    @property
    def state_path(self) -> Path:
        return self.state_dir if self.state_dir.is_absolute() else self.root / self.state_dir

    def tokens(self, scope: str) -> list[str]:
        """Configured bearer tokens of one scope ("read" or "write")."""
        value = self.api_write_tokens if scope == "write" else self.api_read_tokens
        return [t.strip() for t in value.get_secret_value().split(",") if t.strip()] if value else []

"""Reading Argo CD: REST (list or get-by-name, selectors, custom CA) and the Kubernetes API
(Application custom resources through the kubernetes client and a generated kubeconfig), and
what poll_once leaves in Redis."""

from __future__ import annotations

import json
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from api_support import READ, TOKENS, EnvRepoShas, build_app, make_settings, refreshed, unit, write_config
from argo_fakes import ArgoCDServer, KubernetesServer, application, validate_application
from fastapi.testclient import TestClient

from meshgen.argocd.poller import GET_BY_NAME_MAX, ArgoKeys, poll_once, trim
from meshgen.argocd.source import ArgoCDError, Locator, selector_matches
from meshgen.blueprint.config import ArgoCDSettings
from meshgen.blueprint.loading import load_config
from meshgen.records import Records
from meshgen.settings import Settings


def _config(root: Path, env_repo: EnvRepoShas, argocd: dict[str, Any]) -> Any:
    write_config(root, env_repo.path, argocd)
    return load_config(root)[0]


def _cached(records: Records) -> dict[str, dict[str, Any]]:
    keys = ArgoKeys(records.prefix)
    names = sorted(n.decode() for n in records.client.smembers(keys.apps))
    return {n: json.loads(records.client.get(keys.app(n))) for n in names}


def test_argocd_durations_are_blueprint_durations() -> None:
    """pollInterval and staleAfter read like every blueprint duration (one parser: meshgen.blueprint.base)."""
    from meshgen.argocd.poller import poll_interval
    from meshgen.blueprint.config import Config

    def config(**argocd: Any) -> Config:
        return Config.model_validate({"environments": {"x": {}}, "argocd": {"url": "http://argocd", **argocd}})

    assert poll_interval(None) == 30.0 and poll_interval(config()) == 30.0
    assert poll_interval(config(pollInterval="1m30s")) == 90 and poll_interval(config(pollInterval="500ms")) == 0.5
    assert config(staleAfter="1h").argocd.stale_after.seconds == 3600  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="write 15s for seconds"):
        config(pollInterval=15)
    with pytest.raises(ValueError, match="is not a duration"):
        config(pollInterval="soon")


def test_selectors() -> None:
    labels = {"app": "api", "env": "staging", "tier": "web"}
    assert selector_matches("app=api,env==staging", labels)
    assert selector_matches("app in (api, web),tier,!missing,env!=prod", labels)
    assert not selector_matches("app notin (api)", labels)
    assert not selector_matches("missing", labels)
    loc = Locator.from_config(ArgoCDSettings.model_validate(
        {"selector": "meshgen.io/service={service},meshgen.io/env={env},team in (a,b)"}))
    assert loc.selector_for("staging", "payments", "api") == "meshgen.io/service=api,meshgen.io/env=staging,team in (a,b)"
    assert loc.server_selector() == "team in (a,b)"
    with pytest.raises(ArgoCDError, match="placeholders"):
        Locator.from_config(ArgoCDSettings.model_validate({"nameTemplate": "{svc}-{env}"}))


def test_trimmed_application_stays_valid_and_small() -> None:
    app = application("a", revision="a" * 40, conditions=[{"type": "ComparisonError", "message": "x"}], operation=True)
    small = trim(app)
    validate_application(small)
    assert "resources" not in small["status"] and "history" not in small["status"]
    assert small["status"]["sync"]["revision"] == "a" * 40 and small["operation"]["sync"]["revision"] == "a" * 40


def test_rest_get_by_name_for_few_units(settings: Settings, records: Records, argo: ArgoCDServer,
                                        env_repo: EnvRepoShas) -> None:
    records.save_unit(unit(service="api"))
    records.save_unit(unit(service="gone"))
    records.save_unit(unit(namespace="", service="_mesh"))  # no valid application name: not asked for
    argo.put(application("api-staging", revision=env_repo.later))
    config, _ = load_config(settings.root)
    result = poll_once(config, settings, records)
    assert result.ok and result.apps == 1 and result.missing == 1 and result.changed
    assert sorted(argo.requests) == ["/api/v1/applications/api-staging", "/api/v1/applications/gone-staging"]
    cached = _cached(records)
    assert list(cached) == ["api-staging"] and cached["api-staging"]["fetched_at"] > 0
    # Nothing changed: the version counter (which makes API processes rebuild) stays.
    version = records.client.get(ArgoKeys(records.prefix).version)
    assert not poll_once(config, settings, records).changed
    assert records.client.get(ArgoKeys(records.prefix).version) == version
    # The application disappears from Argo CD: it disappears from the cache.
    argo.remove("api-staging")
    assert poll_once(config, settings, records).changed
    assert _cached(records) == {}


def test_rest_lists_once_for_many_units(settings: Settings, records: Records, argo: ArgoCDServer,
                                        env_repo: EnvRepoShas) -> None:
    for i in range(GET_BY_NAME_MAX + 5):
        records.save_unit(unit(service=f"s{i}"))
        argo.put(application(f"s{i}-staging", revision=env_repo.later))
    argo.put(application("someone-elses-app", revision=env_repo.later))
    config, _ = load_config(settings.root)
    result = poll_once(config, settings, records)
    assert result.ok and result.apps == GET_BY_NAME_MAX + 5
    assert argo.requests == ["/api/v1/applications"]
    assert "someone-elses-app" not in _cached(records)


def test_rest_label_selector(tmp_path: Path, prefix: str, records: Records, argo: ArgoCDServer,
                             env_repo: EnvRepoShas) -> None:
    root = tmp_path / "sel"
    root.mkdir()
    _config(root, env_repo, {"url": argo.url, "selector": "owner=platform,svc={service},env={env}"})
    settings = make_settings(root, prefix)
    records.save_unit(unit(service="api", pr_state="merged", merge=env_repo.merge, head=env_repo.branch))
    argo.put(application("payments-api-stg", revision=env_repo.later,
                         labels={"owner": "platform", "svc": "api", "env": "staging"}))
    argo.put(application("payments-api-prod", revision=env_repo.base,
                         labels={"owner": "platform", "svc": "api", "env": "production"}))
    argo.put(application("foreign", revision=env_repo.base, labels={"owner": "other", "svc": "api", "env": "staging"}))
    assert poll_once(load_config(root)[0], settings, records).ok
    assert argo.requests == ["/api/v1/applications?selector=owner%3Dplatform"]
    assert sorted(_cached(records)) == ["payments-api-prod", "payments-api-stg"]
    app, _ = build_app(settings, records)
    with TestClient(app) as client:
        body = refreshed(client).get("/api/v1/rollouts/staging/payments/api", headers=READ).json()
        assert body["state"] == "healthy" and body["argocd"]["application"] == "payments-api-stg"


def test_poll_errors_are_counted_and_say_what_to_check(settings: Settings, records: Records, argo: ArgoCDServer,
                                                       env_repo: EnvRepoShas) -> None:
    records.save_unit(unit())
    config, _ = load_config(settings.root)
    bad_token = make_settings(settings.root, records.prefix, argocd_token="wrong")
    result = poll_once(config, bad_token, records)
    assert not result.ok and "401" in (result.error or "") and "MESHGEN_ARGOCD_TOKEN" in (result.error or "")
    argo.fail_with = 500
    assert not poll_once(config, settings, records).ok
    keys = ArgoKeys(records.prefix)
    assert int(records.client.get(keys.poll_errors)) == 2
    assert records.client.get(keys.polled) is None
    app, _ = build_app(settings, records)
    with TestClient(app) as client:
        metrics = client.get("/metrics", headers=READ).text
        assert "meshgen_argocd_poll_errors_total 2.0" in metrics and "meshgen_argocd_poll_failing 1.0" in metrics


def test_unreachable_argocd(tmp_path: Path, prefix: str, records: Records, env_repo: EnvRepoShas) -> None:
    root = tmp_path / "down"
    root.mkdir()
    config = _config(root, env_repo, {"url": "http://127.0.0.1:9"})
    records.save_unit(unit())
    result = poll_once(config, make_settings(root, prefix), records)
    assert not result.ok and "unreachable" in (result.error or "")


def test_only_one_poll_at_a_time(settings: Settings, records: Records, argo: ArgoCDServer) -> None:
    records.client.set(ArgoKeys(records.prefix).lock, "someone", px=5000)
    assert poll_once(load_config(settings.root)[0], settings, records).skipped
    assert argo.requests == []


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "ca.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def test_rest_with_custom_ca(tmp_path: Path, prefix: str, records: Records, env_repo: EnvRepoShas,
                             tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = ArgoCDServer(TOKENS["argocd"], tls=ctx)
    try:
        server.put(application("api-staging", revision=env_repo.later))
        records.save_unit(unit())
        root = tmp_path / "tls"
        root.mkdir()
        settings = make_settings(root, prefix)
        without_ca = poll_once(_config(root, env_repo, {"url": server.url}), settings, records)
        assert not without_ca.ok and "caFile" in (without_ca.error or "")
        with_ca = poll_once(_config(root, env_repo, {"url": server.url, "caFile": str(cert)}), settings, records)
        assert with_ca.ok and with_ca.apps == 1
    finally:
        server.stop()


def test_token_from_file_and_from_another_variable(tmp_path: Path, prefix: str, records: Records, argo: ArgoCDServer,
                                                   env_repo: EnvRepoShas, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "tok"
    root.mkdir()
    (root / "argocd-token").write_text(TOKENS["argocd"] + "\n")
    settings = make_settings(root, prefix, argocd_token=None)
    records.save_unit(unit())
    assert poll_once(_config(root, env_repo, {"url": argo.url, "tokenFile": "argocd-token"}), settings, records).ok
    monkeypatch.setenv("ARGO_TOKEN_FOR_TEST", TOKENS["argocd"])
    assert poll_once(_config(root, env_repo, {"url": argo.url, "tokenEnv": "ARGO_TOKEN_FOR_TEST"}), settings, records).ok


# ---- Kubernetes mode ------------------------------------------------------------------


@pytest.fixture
def kube() -> Any:
    server = KubernetesServer("kube-token")
    yield server
    server.stop()


@pytest.mark.parametrize("many", [False, True], ids=["get-by-name", "list"])
def test_kubernetes_mode(tmp_path: Path, prefix: str, records: Records, env_repo: EnvRepoShas, kube: KubernetesServer,
                         many: bool) -> None:
    root = tmp_path / "k8s"
    root.mkdir()
    kubeconfig = kube.kubeconfig(root / "kubeconfig", "kube-token")
    config = _config(root, env_repo, {"mode": "kubernetes", "kubeconfig": "kubeconfig", "context": "test",
                                      "namespace": "argocd"})
    settings = make_settings(root, prefix)
    count = GET_BY_NAME_MAX + 3 if many else 2
    for i in range(count):
        records.save_unit(unit(service=f"s{i}", pr_state="merged", merge=env_repo.merge, head=env_repo.branch))
        kube.put(application(f"s{i}-staging", revision=env_repo.later if i else env_repo.base))
    result = poll_once(config, settings, records)
    assert result.ok and result.apps == count, result
    base = "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications"
    assert all(r.startswith(base) for r in kube.requests)
    assert (len(kube.requests) == 1) is many
    app, _ = build_app(settings, records)
    with TestClient(app) as client:
        refreshed(client)
        states = [client.get(f"/api/v1/rollouts/staging/payments/s{i}", headers=READ).json()["state"] for i in range(2)]
        assert states == ["awaiting-sync", "healthy"]
    assert kubeconfig.exists()


def test_kubernetes_mode_errors(tmp_path: Path, prefix: str, records: Records, env_repo: EnvRepoShas,
                                kube: KubernetesServer) -> None:
    root = tmp_path / "k8s-bad"
    root.mkdir()
    kube.kubeconfig(root / "kubeconfig", "not-the-token")
    records.save_unit(unit())
    settings = make_settings(root, prefix)
    result = poll_once(_config(root, env_repo, {"mode": "kubernetes", "kubeconfig": "kubeconfig"}), settings, records)
    assert not result.ok and "401" in (result.error or "")
    result = poll_once(_config(root, env_repo, {"mode": "kubernetes", "kubeconfig": "missing"}), settings, records)
    assert not result.ok and "kubeconfig" in (result.error or "")

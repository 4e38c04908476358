"""`meshgen up` as a newcomer runs it: blueprint → local PR → `meshgen pr merge` → rollout state."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from helpers import free_port, wait_for

EXAMPLES = Path(__file__).resolve().parents[1] / "blueprints"


@pytest.mark.slow
def test_up_renders_opens_local_prs_serves_state_and_follows_edits(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(EXAMPLES, root, ignore=shutil.ignore_patterns(".meshgen"))
    port = free_port()
    env = {**os.environ, "MESHGEN_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}  # nothing listens: in-memory
    proc = subprocess.Popen([sys.executable, "-m", "meshgen", "up", str(root), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    base = f"http://127.0.0.1:{port}"

    def api_up() -> dict | None:  # type: ignore[type-arg]
        if proc.poll() is not None:
            raise AssertionError(f"meshgen up exited with {proc.returncode}:\n{proc.stdout.read() if proc.stdout else ''}")
        return httpx.get(f"{base}/api/v1/rollouts?limit=100", timeout=2).json()  # type: ignore[no-any-return]

    try:
        rollouts = wait_for(api_up, timeout=60, what="the API", interval=0.2, ignore=(httpx.HTTPError,))
        assert rollouts["total"] == 22  # 11 folders (the example kind: Ingress included) x 2 environments
        assert {r["state"] for r in rollouts["items"]} == {"awaiting-review"}
        api = httpx.get(f"{base}/api/v1/rollouts/production/payments/api-service", timeout=2).json()
        number = api["pr"]["number"]
        assert "Is my change live?" in httpx.get(base + "/", timeout=2).text

        repo = root / ".meshgen" / "env-repo"
        listed = subprocess.run([sys.executable, "-m", "meshgen", "pr", "--repo", str(repo), "list"],
                                capture_output=True, text=True, check=True).stdout
        assert f"#{number}" in listed
        subprocess.run([sys.executable, "-m", "meshgen", "pr", "--repo", str(repo), "merge", str(number)],
                       capture_output=True, text=True, check=True)

        # An edit is noticed and synced: the merged service gets a new pull request with the change.
        path = root / "blueprints" / "payments" / "api-service.yaml"
        path.write_text(path.read_text().replace("v1: 90, v2: 10", "v1: 70, v2: 30"))

        def new_pr() -> dict | None:  # type: ignore[type-arg]
            now = httpx.get(f"{base}/api/v1/rollouts/production/payments/api-service", timeout=2).json()
            return now if now["pr"] and now["pr"]["number"] != number else None

        after = wait_for(new_pr, timeout=30, what="a pull request for the edit", interval=0.2, ignore=(httpx.HTTPError,))
        assert after["state"] == "awaiting-review"
        job = httpx.get(f"{base}/api/v1/jobs/{after['job']['id']}", timeout=2).json()
        assert job["state"] == "succeeded"
        # No churn: after one merge and one edit, no other pull request was pushed again.
        assert sorted(p["action"] for p in job["prs"] if p["action"] != "unchanged") == ["opened"]
        shown = subprocess.run([sys.executable, "-m", "meshgen", "pr", "--repo", str(repo), "show",
                                str(after["pr"]["number"])], capture_output=True, text=True, check=True).stdout
        assert "weight v2 10 → 30" in shown
    except BaseException:
        proc.terminate()
        print(proc.communicate(timeout=20)[0])  # shown by pytest on failure
        raise
    finally:
        if proc.poll() is None:
            proc.terminate()
        out = proc.communicate(timeout=20)[0] or ""
    assert "records: memory (no Redis answered" in out
    assert "pull requests 22 opened" in out


@pytest.mark.slow
def test_up_holds_back_only_a_broken_blueprint_and_prints_diagnostics(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(EXAMPLES, root, ignore=shutil.ignore_patterns(".meshgen"))
    broken = root / "blueprints" / "payments" / "api-service.yaml"
    broken.write_text(broken.read_text().replace("v1: 90, v2: 10", "v1: 90, v2: 20"))
    (root / "blueprints" / "payments" / "new-empty.yaml").write_text("")
    port = free_port()
    env = {**os.environ, "MESHGEN_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    proc = subprocess.Popen([sys.executable, "-m", "meshgen", "up", str(root), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    base = f"http://127.0.0.1:{port}"

    def api_up() -> dict | None:  # type: ignore[type-arg]
        if proc.poll() is not None:
            raise AssertionError(f"meshgen up exited with {proc.returncode}")
        return httpx.get(f"{base}/api/v1/rollouts?limit=100", timeout=2).json()  # type: ignore[no-any-return]

    try:
        rollouts = wait_for(api_up, timeout=60, what="the API", interval=0.2, ignore=(httpx.HTTPError,))
        states = {(r["env"], r["namespace"], r["service"]): r for r in rollouts["items"]}
        failed = states[("production", "payments", "api-service")]
        assert failed["state"] == "render-failed"
        assert failed["reason"].startswith("blueprints/payments/api-service.yaml:")
        others = [r for k, r in states.items() if k[2] != "api-service"]
        assert others and {r["state"] for r in others} == {"awaiting-review"}  # every other team delivered
        page = httpx.get(base + "/", timeout=2).text
        assert "blueprints/payments/api-service.yaml:" in page and "mesh-wide" in page
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0] or ""
    assert "blueprints/payments/api-service.yaml:" in out and "blueprints/payments/new-empty.yaml:" in out
    assert "Traceback" not in out
    assert "only the units of the failing blueprints were held back" in out


def test_long_syncs_report_progress_every_tenth_when_not_on_a_terminal(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from meshgen.up import ProgressReport

    report = ProgressReport()
    with caplog.at_level(logging.INFO, logger="meshgen.up"):
        for done in range(1, 201):
            report("production", done, 200)
        for done in range(1, 11):
            report("staging", done, 10)  # short: no progress lines
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "syncing production: 1/200 pull-request groups"
    assert lines[-1] == "syncing production: 200/200 pull-request groups"
    assert len(lines) == 11  # 0%, 10%, ..., 100%
    assert not any("staging" in line for line in lines)


def test_a_transport_failure_in_the_watch_loop_is_one_line_with_the_fix(caplog: pytest.LogCaptureFixture) -> None:
    """`meshgen up` against a real forge with a wrong token: the error names the repository and the fix;
    a traceback would bury it (the first sync already logs it so)."""
    import logging

    from meshgen.gitops.transport import GitTransportError
    from meshgen.records import JobRecord
    from meshgen.up import JobRunner

    calls: list[str] = []

    def fail(trigger: str, job: JobRecord | None) -> JobRecord:
        calls.append(trigger)
        raise GitTransportError("https://git.example.com/env.git", "fetch", "auth",
                                "fetch environment repository https://git.example.com/env.git: the server rejected "
                                "the credentials (HTTP 401); check that the token is valid")

    runner = JobRunner(fail)
    caplog.set_level(logging.INFO, logger="meshgen")
    runner.start()
    runner.submit("change")
    wait_for(lambda: calls and any("sync failed" in r.getMessage() for r in caplog.records), 10, "the failed sync")
    runner.stop()
    [record] = [r for r in caplog.records if "sync failed" in r.getMessage()]
    assert record.exc_info is None and "rejected the credentials" in record.getMessage()
    assert calls == ["change"]


def test_up_names_meshgen_pr_only_for_a_local_environment_repository(tmp_path: Path) -> None:
    from meshgen.up import _env_repo_hint

    (tmp_path / "meshgen.yaml").write_text("environments: {prod: {}}\nenvRepo:\n  url: https://git.example.com/env.git\n")
    assert _env_repo_hint(tmp_path) is None
    (tmp_path / "meshgen.yaml").write_text("environments: {prod: {}}\n")
    assert _env_repo_hint(tmp_path) is not None

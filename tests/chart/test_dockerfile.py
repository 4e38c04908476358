"""The Dockerfile, checked by reading it (no Docker daemon here), and its agreement with the chart."""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from chart_support import CHART, REPO, template, values

DOCKERFILE = REPO / "Dockerfile"
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|cc|make|build-essential|clang|cargo|rustc|libc6?-dev|python3?-dev|cmake)\b")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def parse(path: Path = DOCKERFILE) -> tuple[dict[str, str], list[Stage]]:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for inst, rest in _instructions(path.read_text()):
        if inst == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif inst == "FROM":
            words = rest.split()
            words = [w for w in words if not w.startswith("--platform")]
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        else:
            assert stages, f"{inst} before FROM"
            stages[-1].instructions.append((inst, rest))
    return args, stages


def _last(stage: Stage, inst: str) -> str | None:
    found = [rest for i, rest in stage.instructions if i == inst]
    return found[-1] if found else None


def test_multi_stage_with_a_builder_that_builds_a_wheel() -> None:
    _, stages = parse()
    assert len(stages) >= 2
    builder, runtime = stages[0], stages[-1]
    assert builder.name == "builder"
    assert any(i == "RUN" and "pip wheel" in r for i, r in builder.instructions)
    runs = " ".join(r for i, r in runtime.instructions if i == "RUN")
    assert "from=builder" in runs and "--no-index" in runs  # installs the builder's wheels, nothing fetched
    assert not any(i in ("COPY", "ADD") and "--from=builder" not in r for i, r in runtime.instructions), (
        "the runtime stage copies nothing from the build context")


#: System packages the runtime may install: git and OpenSSH for SSH remotes (meshgen/gitops/transport.py).
RUNTIME_PACKAGES = {"git", "openssh-client"}


def test_runtime_has_no_build_tools() -> None:
    _, stages = parse()
    runtime = stages[-1]
    for inst, rest in runtime.instructions:
        if inst == "RUN":
            assert "apk add" not in rest, rest
            for match in re.finditer(r"apt-get install ([^&;]*)", rest):
                words = match.group(1).split()
                assert "--no-install-recommends" in words, rest
                assert {w for w in words if not w.startswith("-")} <= RUNTIME_PACKAGES, rest
                assert "rm -rf /var/lib/apt/lists/*" in rest, rest  # no package index left in the layer
            assert not BUILD_TOOLS.search(rest), rest


def test_base_images_are_pinned() -> None:
    _, stages = parse()
    for stage in stages:
        ref = stage.base
        if ref in {s.name for s in stages}:
            continue
        image, _, digest = ref.partition("@")
        repo, _, tag = image.rpartition(":")
        assert repo == "python", ref
        assert re.fullmatch(r"3\.11\.\d+-slim-bookworm", tag), f"{ref}: pin a patch release, never latest"
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"{ref}: pin the digest too"


def test_runs_as_a_numeric_non_root_user() -> None:
    _, stages = parse()
    user = _last(stages[-1], "USER")
    assert user is not None
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) == 10001, user
    assert not gid or gid.isdigit()
    # The chart's pod securityContext runs as the same user.
    assert values()["podSecurityContext"]["runAsUser"] == int(uid)


def test_entrypoint_and_port_match_the_chart() -> None:
    _, stages = parse()
    runtime = stages[-1]
    assert _last(runtime, "ENTRYPOINT") == '["meshgen"]'
    exposed = {int(p.split("/")[0]) for p in shlex.split(_last(runtime, "EXPOSE") or "")}
    v = values()
    assert exposed == {v["api"]["port"]}
    docs = template()
    api = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-api"))
    assert api["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] in exposed


def test_chart_image_is_the_project_version() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert values()["image"]["tag"] == version
    assert chart["appVersion"] == version
    assert chart["version"] == version
    from meshgen import __version__

    assert __version__ == version

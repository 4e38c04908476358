"""Render charts/meshgen with the real helm binary (extracted from a PyPI package, see bench/tools.py)."""

from __future__ import annotations

import functools
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "meshgen"
FULL_VALUES = Path(__file__).resolve().parent / "values-full.yaml"
RELEASE = "mg"


@functools.cache
def _bench_tools() -> Any:
    """bench/tools.py, loaded by path under its own module name (no sys.path entry for bench/)."""
    name = "meshgen_bench_tools"
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / "tools.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@functools.cache
def helm() -> str:
    tools = _bench_tools()
    try:
        return str(tools.helm_binary())
    except tools.ToolNotFound as exc:  # a missing install step must fail loudly, not skip
        pytest.fail(str(exc))


def run_helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([helm(), *args], capture_output=True, text=True, timeout=120, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def template(*args: str, namespace: str = "meshgen") -> list[dict[str, Any]]:
    out = run_helm("template", RELEASE, str(CHART), "--namespace", namespace, *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def values(path: Path = CHART / "values.yaml") -> dict[str, Any]:
    return yaml.safe_load(path.read_text())

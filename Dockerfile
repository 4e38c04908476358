# syntax=docker/dockerfile:1
# meshgen image: `meshgen serve` (API), `meshgen worker`, and `celery -A worker.app beat`.
#
# Base: python 3.11.14 on Debian bookworm (slim), pinned by tag AND by the digest of its
# multi-architecture index, so a rebuild gets the same bytes. To move to a newer patch
# release, change both (docker buildx imagetools inspect python:3.11.X-slim-bookworm).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

# --- builder: a wheel of meshgen plus wheels of every dependency --------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY meshgen ./meshgen
COPY worker ./worker
# Every dependency ships binary wheels for linux x86_64/aarch64 (pydantic-core, pygit2, ...),
# so not even the builder needs a compiler.
RUN pip wheel --wheel-dir /wheels .

# --- runtime: the wheels installed into a virtualenv, nothing else --------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PATH=/opt/meshgen/bin:$PATH \
    HOME=/var/lib/meshgen \
    MESHGEN_ROOT=/var/lib/meshgen/blueprints \
    MESHGEN_STATE_DIR=/var/lib/meshgen/state \
    MESHGEN_HOST=0.0.0.0 \
    MESHGEN_PORT=8080
# git + OpenSSH: SSH remotes (ssh://, git@host:path) are fetched and pushed with the git CLI so that
# host keys are checked by OpenSSH against MESHGEN_GIT_KNOWN_HOSTS_FILE (meshgen/gitops/transport.py).
RUN apt-get update \
 && apt-get install -y --no-install-recommends git openssh-client \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 meshgen \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/meshgen --shell /usr/sbin/nologin meshgen \
 && install -d -o 10001 -g 10001 /var/lib/meshgen /var/lib/meshgen/blueprints /var/lib/meshgen/state
# The wheels are bind-mounted from the builder, so they never become a layer of this image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m venv /opt/meshgen \
 && /opt/meshgen/bin/pip install --no-index --find-links=/wheels meshgen \
 && /opt/meshgen/bin/pip uninstall --yes pip \
 && meshgen --version
USER 10001:10001
WORKDIR /var/lib/meshgen
EXPOSE 8080
ENTRYPOINT ["meshgen"]
CMD ["serve"]

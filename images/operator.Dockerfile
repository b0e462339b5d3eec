# The operator image: `agent-operator` on PATH, run as uid and gid 10001 (appuser).
#
#   docker build -f images/operator.Dockerfile -t agentworker/agent-operator:dev .
#
# The context is the repository root (see .dockerignore); `make images` builds all images.
# Stages: `build` turns the project and its dependencies into wheels; `install` installs only
# those wheels (--no-index) into /opt/venv; the final image copies /opt/venv onto the base: no
# pip, no compiler, no pip cache, and of the wheels only the companion's, for agent images. (Not
# `RUN --mount=type=bind,from=build`: buildah and podman reuse such a layer from cache after the
# stage changed, containers/buildah#4522.)
# Behind a proxy that re-signs TLS, pass its CA bundle as the build secret `ca-bundle`
# (`--secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt`); hack/images.sh does.

# Pinned by tag, not digest: no registry was reachable where this was written, so no digest could
# be checked. The release workflow builds from this tag; pin `python:3.11-slim-bookworm@sha256:...`
# (`docker buildx imagetools inspect python:3.11-slim-bookworm`) for reproducible builds. Any
# Debian-like image with python3 (3.11+) and its venv module will do: hack/base-image.sh makes one.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# The build stage is identical in images/worker.Dockerfile: the builds share it.
FROM ${BASE_IMAGE} AS build
# Made outside /src, where the project's operator/ would shadow the standard library's operator.
RUN python3 -m venv /opt/build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY worker_runtime/ worker_runtime/
COPY companion/ companion/
# /companion-wheels: the companion as a distribution of its own (companion/pyproject.toml), which
# the operator image ships for images where injection cannot work
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
    && export PIP_DISABLE_PIP_VERSION_CHECK=1 \
    && /opt/build/bin/pip wheel --wheel-dir /wheels '.[operator,rtc]' \
    && /opt/build/bin/pip wheel --no-deps --wheel-dir /companion-wheels ./companion

FROM ${BASE_IMAGE} AS install
COPY --from=build /wheels /wheels
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links=/wheels 'agentworker[operator]' \
    && /opt/venv/bin/pip uninstall --yes --quiet pip setuptools

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="agent-operator" \
      org.opencontainers.image.description="Runs LiveKit agent workers as AgentWorker resources" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 10001 appuser \
    && useradd --uid 10001 --gid 10001 --no-log-init --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin appuser
COPY --from=install /opt/venv /opt/venv
# The companion's wheel (py3-none-any, no dependencies), for agent images to install when the
# operator's injection cannot work there (spec.companion.mode Installed, docs/agent-image.md):
#   COPY --from=<this image> /opt/agentworker/wheels/ /tmp/wheels/
COPY --from=build /companion-wheels/ /opt/agentworker/wheels/
# HOME and the cache are under /tmp, writable under readOnlyRootFilesystem once /tmp is a volume.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache
WORKDIR /app
USER 10001:10001
ENTRYPOINT ["agent-operator"]

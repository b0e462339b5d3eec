# The worker runtime image: `agent-worker` with the `rtc` extra (not the `operator` extra: no
# Kubernetes client in the agents' base image), run as uid and gid 10001
# (appuser, as in LiveKit's agent-starter images). Agents build FROM it: copy the code into
# /app, run `agent-worker download-files module:entrypoint`, and the operator starts
# `agent-worker start module:entrypoint` (examples/agent-image/).
#
#   docker build -f images/worker.Dockerfile -t agentworker/agent-worker:dev .
#
# The context is the repository root (see .dockerignore); `make images` builds all images.
# Stages: `build` turns the project and its dependencies into wheels; `install` installs only
# those wheels (--no-index) into /opt/venv; the final image copies /opt/venv onto the base: no
# compiler, no wheels, no pip cache; pip stays, for the agents' own packages. (Not
# `RUN --mount=type=bind,from=build`: buildah and podman reuse such a layer from cache after the
# stage changed, containers/buildah#4522.) Behind a proxy that re-signs TLS, pass its CA bundle
# as the build secret `ca-bundle` (`--secret id=ca-bundle,src=...`); hack/images.sh does.
#
# Files at run time, under the operator's readOnlyRootFilesystem with an emptyDir at /tmp:
# - HOME=/tmp: whatever a library writes at run time (locks, config, matplotlib, numba) lands on
#   the emptyDir.
# - XDG_CACHE_HOME=/var/cache/agent, owned by appuser: model files that `download-files` fetches
#   at build time (the Hugging Face hub, torch hub and most libraries keep them under
#   $XDG_CACHE_HOME), kept in the image and read-only at run time, which is what livekit-agents
#   plugins expect: they load their models with local_files_only. An agent that downloads models
#   at run time instead sets XDG_CACHE_HOME=/tmp/cache, or mounts a volume at /var/cache/agent.

# Pinned by tag, not digest: no registry was reachable where this was written, so no digest could
# be checked. The release workflow builds from this tag; pin `python:3.11-slim-bookworm@sha256:...`
# (`docker buildx imagetools inspect python:3.11-slim-bookworm`) for reproducible builds. Any
# Debian-like image with python3 (3.11+) and its venv module will do: hack/base-image.sh makes one.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# The build stage is identical in images/operator.Dockerfile: the builds share it.
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
    && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links=/wheels 'agentworker[rtc]' \
    && /opt/venv/bin/pip uninstall --yes --quiet setuptools

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="agent-worker" \
      org.opencontainers.image.description="A slim LiveKit agent worker; agents build FROM it" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 10001 appuser \
    && useradd --uid 10001 --gid 10001 --no-log-init --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin appuser \
    && install -d -o 10001 -g 10001 -m 0755 /var/cache/agent
COPY --from=install /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/var/cache/agent \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
USER 10001:10001
CMD ["agent-worker", "--help"]

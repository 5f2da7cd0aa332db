# The collab server image:  docker build -t collab .
#
# Two stages: the first installs the pinned runtime dependencies (requirements.lock, every
# file checked against its sha256: pip --require-hashes) and the server into a virtual
# environment; the second copies only that environment onto a clean base. No compiler, no
# test or load-test dependencies, no sources beyond the server's packages. Runs as an
# unprivileged user; its data directory (embedded stores, the Redis-outage spool) is a volume.
#
# Regenerate the lock file after changing the dependencies in pyproject.toml:
#   pip-compile --generate-hashes --no-emit-index-url --no-emit-find-links --strip-extras \
#       --output-file=requirements.lock pyproject.toml

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/collab
WORKDIR /src
COPY requirements.lock ./
RUN /opt/collab/bin/pip install --require-hashes --only-binary=:all: -r requirements.lock
COPY pyproject.toml README.md ./
COPY protocol ./protocol
COPY crdt ./crdt
COPY persistence ./persistence
COPY server ./server
# The dependencies are in place (pinned, hashed): the project itself only.
RUN /opt/collab/bin/pip install --no-deps .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --home-dir /home/collab --create-home collab \
    && mkdir /data && chown collab:collab /data
COPY --from=build /opt/collab /opt/collab
ENV PATH=/opt/collab/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    COLLAB_HOST=0.0.0.0 \
    COLLAB_PORT=8765 \
    COLLAB_DATA_DIR=/data \
    COLLAB_LOG_FORMAT=json
USER collab
WORKDIR /home/collab
VOLUME ["/data"]
EXPOSE 8765
# Ready: started, not draining, its configured services reachable (docs/operations.md).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as u; sys.exit(0 if u.urlopen('http://127.0.0.1:8765/readyz', timeout=2).status == 200 else 1)"]
STOPSIGNAL SIGTERM
CMD ["collab", "serve"]

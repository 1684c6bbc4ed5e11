# kgverify verifier image (CPU). The same image runs the one-shot KB build and the medical QA example.
# vLLM is not in here: it runs as the vllm/vllm-openai image next to it (docker-compose.yml).
FROM python:3.11-slim

# torch comes from the CPU wheel index first: the default index would pull a multi-GB CUDA build.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
WORKDIR /app
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==2.13.0"

# The other dependencies get their own layer, keyed on pyproject.toml alone, so that a source change reuses it:
# an empty package skeleton installs nothing but the dependencies, and is removed again.
# constraints.txt pins every package to the versions the test suite last passed with.
COPY pyproject.toml constraints.txt ./
RUN mkdir -p server client kb proto/kgverify && touch README.md \
    && pip install -c constraints.txt . && pip uninstall -y kgverify \
    && rm -rf server client kb proto README.md build kgverify.egg-info

# What gets copied is decided by .dockerignore (no venv, tests, training data or git history).
COPY . .
RUN pip install --no-deps . && useradd --system --uid 10001 --home-dir /app kgv \
    && mkdir -p /kb /run/kgverify /var/cache/kgverify \
    && chown kgv /kb /run/kgverify /var/cache/kgverify

USER kgv
# The installed package looks for the NLI judge beside site-packages; point it at the copied models/.
ENV KGV_KB__CACHE_DIR=/var/cache/kgverify \
    KGV_JUDGE__NLI_MODEL_PATH=/app/models/nli-judge \
    KGV_SERVER__LISTEN='["0.0.0.0:50051","unix:///run/kgverify/kgverify.sock"]'
EXPOSE 50051 9100
# The probe uses the unix listener: no TLS or token needed from inside the container.
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 CMD ["python", "-m", "server.healthcheck"]
ENTRYPOINT ["kgverify"]
CMD ["serve"]

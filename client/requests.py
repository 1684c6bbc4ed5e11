"""Building kgverify.v1 requests from Python values and batch input rows."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from kgverify.v1 import common_pb2 as pb
from kgverify.v1 import info_gain_service_pb2 as igpb
from kgverify.v1 import knowledge_base_service_pb2 as kbpb
from kgverify.v1 import knowledge_service_pb2 as kpb

from .errors import VerifierError

JUDGES = {None: 0, "baseline": pb.JUDGE_BACKEND_BASELINE, "nli": pb.JUDGE_BACKEND_NLI,
          "vllm": pb.JUDGE_BACKEND_VLLM, "cascade": pb.JUDGE_BACKEND_CASCADE}
MODES = {None: 0, "dense": pb.RETRIEVAL_MODE_DENSE, "bm25": pb.RETRIEVAL_MODE_BM25,
         "hybrid": pb.RETRIEVAL_MODE_HYBRID}
SPLITTERS = {None: 0, "rules": pb.SPLITTER_RULES, "llm": pb.SPLITTER_LLM}
ESTIMATORS = {None: 0, "lm": igpb.ESTIMATOR_LM, "nli": igpb.ESTIMATOR_NLI}
IG_MODES = {None: 0, "answer_tokens": igpb.INFO_GAIN_MODE_ANSWER_TOKENS, "paper": igpb.INFO_GAIN_MODE_PAPER}
UNITS = {None: 0, "nats": igpb.INFO_UNITS_NATS, "bits": igpb.INFO_UNITS_BITS}
METRICS = {"ki": kpb.METRIC_KNOWLEDGE_INDEX, "infogain": kpb.METRIC_INFO_GAIN}


def _bad(field: str, description: str) -> VerifierError:
    return VerifierError("INVALID_ARGUMENT", "INVALID_ARGUMENT", f"invalid request: {field}: {description}",
                         field_violations=[(field, description)])


def _choice(table: Mapping, value, field: str) -> int:
    if value not in table:
        raise _bad(field, f"must be one of {sorted(k for k in table if k)}, not {value!r}")
    return table[value]


def _text(row: Mapping[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _bad(key, f"must be a string, not {type(value).__name__}")
    return value


def _whole_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _answer(row: Mapping[str, Any], key: str) -> str:
    """An answer as text; a whole number (GSM8K-style `"answer": 42`, an int Parquet column) in decimal. A
    fraction is refused: its JSON spelling ("2.50", "1e-5") is gone once parsed, and InfoGain scores the text."""
    value = row.get(key)
    if _whole_number(value):
        return str(value)
    if isinstance(value, float):
        if value.is_integer():  # (Parquet's float columns are read as integers already: see batch_io)
            raise _bad(key, f"must be a string or a whole number, not the float {value!r} (a column of whole "
                            f"numbers with gaps is written as floats, e.g. by pandas): write it as an integer "
                            f"({int(value)}) or as the text to score (\"{value!r}\")")
        raise _bad(key, f"must be a string or a whole number, not the fraction {value!r}: write it as the text "
                        f"to score (\"{value!r}\")")
    return _text(row, key)


def _strings(row: Mapping[str, Any], key: str, numbers: bool = False) -> list[str]:
    value = row.get(key)
    if value is None:
        return []
    # (a tuple too: a Python caller's steps=("…", "…") was refused as if the server had found it bad)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) or (numbers and _whole_number(v))
                                                        for v in value):
        raise _bad(key, "must be a list of strings" + (" or whole numbers" if numbers else ""))
    return [str(v) for v in value] if numbers else list(value)


def _letters(count: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(count)]


def _choices(row: Mapping[str, Any]) -> list[str]:
    """The options of a row: a list of texts, or an object keyed by their letters in order ({"A": "...", "B":
    "..."}, as MedQA and MedBullets write them), taken in letter order. A null option past the last one given is
    absent (a Parquet struct column of rows with 4 and 5 options gives the 4-option rows E: null); a null before
    a given one is refused, naming it. Each text is taken without the spaces and line breaks around it (MedQA
    has options ending in "\n"); a line break inside one stays the server's to refuse."""
    value = row.get("choices")
    if isinstance(value, Mapping) and value:
        keys = [str(k).strip().upper() for k in value]
        given = {key: v for key, v in zip(keys, value.values()) if v is not None}
        if sorted(keys) != _letters(len(keys)) or sorted(given) != _letters(len(given)):
            nulls = sorted(key for key, v in zip(keys, value.values()) if v is None)
            if sorted(keys) == _letters(len(keys)) and nulls:
                last = max(given) if given else ""
                gap = [key for key in nulls if key < last]
                raise _bad("choices", f"option {gap[0]} is null, but option {last} after it is given: give every "
                                      "option up to the last, or the options as a list of their texts, in order")
            raise _bad("choices", "is an object whose keys are not the letters A, B, C, ... in turn: give the "
                                  "options as a list of their texts, in order")
        options = _strings({"choices": [given[letter] for letter in _letters(len(given))]}, "choices", numbers=True)
    else:
        options = _strings(row, "choices", numbers=True)
    return [option.strip() for option in options]


def _passage_field(value: Any) -> str:
    """A passage field as text; missing or null is empty (an id 0 stays "0")."""
    return "" if value is None else str(value)


def passages(value: Iterable[Any] | None) -> list[pb.Passage]:
    """Context passages from strings or {"text", "id"?, "source"?, "title"?} objects."""
    if value is not None and (isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable)):
        # (a string or an object would otherwise be read a character or a key at a time)
        raise _bad("context", "must be a list of passages (strings or objects with a string 'text'), not "
                              f"{type(value).__name__}")
    out = []
    for i, item in enumerate(value or []):
        if isinstance(item, str):
            out.append(pb.Passage(text=item))
        elif isinstance(item, Mapping) and isinstance(item.get("text"), str):
            out.append(pb.Passage(id=_passage_field(item.get("id")), text=item["text"],
                                  source=_passage_field(item.get("source")), title=_passage_field(item.get("title"))))
        else:
            raise _bad(f"context[{i}]", "must be a string or an object with a string 'text'")
    return out


def knowledge_options(top_k: int = 0, judge: str | None = None, retrieval_mode: str | None = None,
                      use_knowledge_base: bool | None = None, splitter: str | None = None) -> kpb.KnowledgeOptions:
    options = kpb.KnowledgeOptions(top_k=top_k, judge=_choice(JUDGES, judge, "judge"),
                                   retrieval_mode=_choice(MODES, retrieval_mode, "retrieval_mode"),
                                   splitter=_choice(SPLITTERS, splitter, "splitter"))
    if use_knowledge_base is not None:
        options.use_knowledge_base = use_knowledge_base
    return options


def info_gain_options(estimator: str | None = None, mode: str | None = None, units: str | None = None,
                      window: int = 0, per_token: bool = False, splitter: str | None = None) -> igpb.InfoGainOptions:
    return igpb.InfoGainOptions(estimator=_choice(ESTIMATORS, estimator, "estimator"),
                                mode=_choice(IG_MODES, mode, "mode"), units=_choice(UNITS, units, "units"),
                                window=window, per_token=per_token, splitter=_choice(SPLITTERS, splitter, "splitter"))


def chain_request(row: Mapping[str, Any], metrics: Sequence[str] = ("ki", "infogain"),
                  knowledge: kpb.KnowledgeOptions | None = None,
                  info_gain: igpb.InfoGainOptions | None = None) -> kpb.ScoreChainRequest:
    """A ScoreChainRequest from a batch input row (question, reasoning | steps, answer, gold_answer, ...)."""
    if not isinstance(row, Mapping):
        raise _bad("row", "must be a JSON object")
    request = kpb.ScoreChainRequest(
        question=_text(row, "question"), reasoning=_text(row, "reasoning"), steps=_strings(row, "steps"),
        answer=_answer(row, "answer"), gold_answer=_answer(row, "gold_answer"),
        choices=_choices(row),
        context=passages(row.get("context")), metrics=[_choice(METRICS, m, "metrics") for m in metrics],
    )
    if knowledge is not None:
        request.knowledge_options.CopyFrom(knowledge)
    if info_gain is not None:
        request.info_gain_options.CopyFrom(info_gain)
    return request


def split_request(reasoning: str | None = None, steps: Sequence[str] | None = None, question: str = "",
                  splitter: str | None = None) -> kpb.SplitReasoningRequest:
    return kpb.SplitReasoningRequest(reasoning=reasoning or "", steps=list(steps or []), question=question,
                                     splitter=_choice(SPLITTERS, splitter, "splitter"))


def search_request(query: str, top_k: int = 0, mode: str | None = None) -> kbpb.SearchKnowledgeBaseRequest:
    return kbpb.SearchKnowledgeBaseRequest(query=query, top_k=top_k, mode=_choice(MODES, mode, "mode"))


def score_chain_request(kwargs: dict[str, Any]) -> kpb.ScoreChainRequest:
    """A ScoreChainRequest from client keyword arguments (the batch row fields plus options)."""
    kwargs = dict(kwargs)
    metrics = kwargs.pop("metrics", ("ki", "infogain"))
    if isinstance(metrics, str):  # metrics="ki": one metric (it was read letter by letter, "not 'k'")
        metrics = (metrics,)
    splitter = kwargs.pop("splitter", None)  # both metrics split the chain alike (ScoreInfoGain dropped it)
    knowledge = knowledge_options(splitter=splitter, **{k: kwargs.pop(k) for k in KNOWLEDGE_KEYS if k in kwargs})
    info_gain = info_gain_options(splitter=splitter, **{k: kwargs.pop(k) for k in INFO_GAIN_KEYS if k in kwargs})
    unknown = set(kwargs) - ROW_KEYS
    if unknown:
        raise TypeError(f"unexpected arguments: {sorted(unknown)}")
    return chain_request({k: v for k, v in kwargs.items() if v is not None}, metrics, knowledge, info_gain)


def score_knowledge_request(kwargs: dict[str, Any]) -> kpb.ScoreKnowledgeRequest:
    chain = score_chain_request({**kwargs, "metrics": ("ki",)})
    return kpb.ScoreKnowledgeRequest(question=chain.question, reasoning=chain.reasoning, steps=chain.steps,
                                     context=chain.context, options=chain.knowledge_options)


def score_info_gain_request(kwargs: dict[str, Any]) -> igpb.ScoreInfoGainRequest:
    chain = score_chain_request({**kwargs, "metrics": ("infogain",)})
    return igpb.ScoreInfoGainRequest(question=chain.question, reasoning=chain.reasoning, steps=chain.steps,
                                     answer=chain.answer, gold_answer=chain.gold_answer, choices=chain.choices,
                                     options=chain.info_gain_options)


KNOWLEDGE_KEYS = ("top_k", "judge", "retrieval_mode", "use_knowledge_base")  # and "splitter", for both metrics
INFO_GAIN_KEYS = ("estimator", "mode", "units", "window", "per_token")
ROW_KEYS = {"question", "reasoning", "steps", "answer", "gold_answer", "choices", "context"}

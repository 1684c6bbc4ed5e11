#!/usr/bin/env python
"""Would hand-made pair features on top of the judge's logits help? A probe, not a shipped component.

A logistic regression over the shipped judge's temperature-scaled logits plus lexical features of each
(premise, claim) pair (numbers of the claim found in the premise, "more/less than N" met or broken by the
premise's numbers, negation on one side only, content-word and bigram coverage, absolute words, opposite
change words, lengths) is fitted on the selection + calibration slices of train (the rows the judge was not
trained on; the 3-way sources, each source weighted alike) and compared with the judge's own argmax:

* 5-fold cross-validation over the slices (folds by slice group key): the development measure;
* once on dev (``--dev``): for the record in docs/judges.md, not for choosing anything.

Needs scikit-learn (installed with sentence-transformers). Prints one JSON object::

    nice -n 10 .venv/bin/python training/feature_stack_probe.py --dev > /tmp/feature_stack.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import train_nli_judge as T  # noqa: E402

DEV = T.DEFAULT_DATA.parent / "dev.jsonl.gz"
THREE_WAY = ("vitaminc", "snli", "checkcovid", "citint")
NUMBER = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?")
WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
NEGATION = frozenset("not no never none nobody nothing neither nor without n't cannot fail failed fails lack lacks "
                     "lacked absence absent unable unlikely".split())
STOP = frozenset("a an the of in on at to for by with from and or is are was were be been being has have had it its "
                 "this that these those as which who whom whose than then there their they he she his her we our "
                 "you your i me my us do does did can could may might will would should shall also into about over "
                 "under after before during more most less least".split())
ABSOLUTE = frozenset("only all completely entirely always never every none solely exclusively totally fully first last "
                     "largest smallest best worst most least highest lowest".split())
UP = frozenset("increase increased increases higher more rise rose raised improve improved improves greater gain".split())
DOWN = frozenset("decrease decreased decreases lower less fewer fall fell reduce reduced reduces reduction decline "
                 "declined worse loss".split())
AT_LEAST = re.compile(r"\b(?:more than|over|at least|greater than|higher than|exceed(?:s|ed)?|above|upwards of|"
                      r"in excess of)\s+[$£€]?(\d[\d,]*(?:\.\d+)?)", re.I)
AT_MOST = re.compile(r"\b(?:less than|under|fewer than|below|at most|lower than|no more than)\s+[$£€]?"
                     r"(\d[\d,]*(?:\.\d+)?)", re.I)
FEATURES = ("claim_has_number", "claim_numbers_in_premise", "claim_number_missing", "premise_has_number",
            "claim_number_premise_none", "coverage", "bigram_coverage", "negation_claim", "negation_premise",
            "negation_one_side", "bound_met", "bound_broken", "absolute_claim", "absolute_claim_only",
            "up_vs_down", "down_vs_up", "log_premise_words", "log_claim_words")


def numbers(text: str) -> list[float]:
    out = []
    for m in NUMBER.findall(text):
        try:
            out.append(float(m.replace(",", "")))
        except ValueError:
            pass
    return out


def words(text: str) -> list[str]:
    return WORD.findall(text.lower().replace("n't", " n't"))


def features(premise: str, claim: str) -> list[float]:
    pn, cn = numbers(premise), numbers(claim)
    found = [x in set(pn) for x in cn]
    pw, cw = words(premise), words(claim)
    content = [w for w in cw if w not in STOP]
    coverage = sum(w in set(pw) for w in content) / max(1, len(content))
    bigrams = list(zip(cw, cw[1:]))
    bigram_coverage = sum(b in set(zip(pw, pw[1:])) for b in bigrams) / max(1, len(bigrams))
    neg_c, neg_p = any(w in NEGATION for w in cw), any(w in NEGATION for w in pw)
    met = broken = 0
    for pattern, holds in ((AT_LEAST, lambda x, v: x > v), (AT_MOST, lambda x, v: x < v)):
        for m in pattern.finditer(claim):
            v = float(m.group(1).replace(",", ""))
            near = [x for x in pn if v and x and 0.05 < x / v < 20]  # premise numbers of the bound's magnitude
            if near:
                met, broken = (met + 1, broken) if any(holds(x, v) for x in near) else (met, broken + 1)
    abs_c, abs_p = any(w in ABSOLUTE for w in cw), any(w in ABSOLUTE for w in pw)
    up_c, down_c = any(w in UP for w in cw), any(w in DOWN for w in cw)
    up_p, down_p = any(w in UP for w in pw), any(w in DOWN for w in pw)
    return [bool(cn), sum(found) / len(cn) if cn else 0.0, bool(cn) and not all(found), bool(pn), bool(cn) and not pn,
            coverage, bigram_coverage, neg_c, neg_p, neg_c != neg_p, met > 0, broken > 0, abs_c, abs_c and not abs_p,
            up_c and down_p and not up_p, down_c and up_p and not down_p,
            math.log1p(len(pw)), math.log1p(len(cw))]


def macro_f1_by_source(rows, probs) -> dict[str, float]:
    out = {}
    for source in sorted({r["source"] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r["source"] == source]
        labels = [T.LABELS.index(rows[i]["label"]) for i in idx]
        pred = [int(probs[i].argmax()) for i in idx]
        if T.is_binary(source):  # supported vs not, as bench/judge.py scores them
            labels, pred = [int(y == 0) for y in labels], [int(p == 0) for p in pred]
            out[source] = round(T.macro_f1(labels, pred, (0, 1)), 3)
        else:
            out[source] = round(T.macro_f1(labels, pred, (0, 1, 2)), 3)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(T.DEFAULT_DATA))
    p.add_argument("--dev", action="store_true", help="also score the stacker fitted on all slices on dev, once")
    p.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
    p.add_argument("--folds", type=int, default=5)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    from server.backends.judges.nli_model import DEFAULT_MODEL_DIR, NliModel

    judge = NliModel.load(dtype=args.dtype)  # the shipped judge, models/nli-judge
    version = int(json.loads((DEFAULT_MODEL_DIR / "config.json").read_text()).get("slices", 1))  # its slices
    slices = T.split_slices(T.read_train_rows(args.data), version)
    rows = slices["selection"] + slices["calibration"]

    def design(rs):
        logits = judge.predict_logits([(r["premise"], r["hypothesis"]) for r in rs]) / judge.temperature
        return logits, np.hstack([logits, np.array([features(r["premise"], r["hypothesis"]) for r in rs], float)])

    logits, X = design(rows)
    y = np.array([T.LABELS.index(r["label"]) for r in rows])
    sources = np.array([r["source"] for r in rows])
    fit_rows = np.isin(sources, THREE_WAY)
    weight = np.array([1.0 / (sources == s).sum() for s in sources])
    weight /= weight.mean()
    groups = np.array([T.group_key(r, version) for r in rows])

    def fitted(train_idx):
        mean, std = X[train_idx].mean(0), X[train_idx].std(0) + 1e-9
        clf = LogisticRegression(C=1.0, max_iter=3000).fit((X[train_idx] - mean) / std, y[train_idx],
                                                           sample_weight=weight[train_idx])
        return lambda Z: clf.predict_proba((Z - mean) / std)

    stacked = np.zeros((len(rows), 3))
    for train_idx, test_idx in GroupKFold(args.folds).split(X, y, groups):
        stacked[test_idx] = fitted(train_idx[fit_rows[train_idx]])(X[test_idx])
    report = {"probe": "feature_stack", "judge": judge.model_id, "slices_version": version, "features": FEATURES,
              "slices_rows": len(rows),
              "cv_macro_f1": {"judge": macro_f1_by_source(rows, logits), "stacked": macro_f1_by_source(rows, stacked)}}
    if args.dev:
        dev = T.read_jsonl_gz(DEV)
        dev_logits, dev_X = design(dev)
        report["dev_macro_f1"] = {"judge": macro_f1_by_source(dev, dev_logits),
                                  "stacked": macro_f1_by_source(dev, fitted(np.flatnonzero(fit_rows))(dev_X))}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

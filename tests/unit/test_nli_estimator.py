"""The `nli` InfoGain estimator fits each c_i into its scorer's input itself (the scorer would cut the newest steps)."""

from __future__ import annotations

import asyncio

import pytest

from server.backends.judges.nli_model import DEFAULT_MODEL_DIR, NliModel
from server.backends.lm.nli_estimator import NliEstimator, fitted_contexts, tail_that_fits
from server.pipeline.deadline import Deadline
from server.pipeline.runtime import Blocking


def words(texts):
    return [len(t.split()) for t in texts]


def test_everything_that_fits_is_kept_whole():
    contexts = fitted_contexts("Q one two", ["s1 a", "s2 b"], words, 100, 1000)
    assert contexts == [("Q one two", False), ("Q one two\ns1 a", False), ("Q one two\ns1 a\ns2 b", False)]


def test_the_newest_steps_are_kept_and_the_oldest_dropped():
    steps = ["a1 a2 a3", "b1 b2 b3", "c1 c2 c3"]
    contexts = fitted_contexts("q1 q2", steps, words, 8, 1000)  # the question 2 words, room for two steps
    assert contexts[3] == ("q1 q2\nb1 b2 b3\nc1 c2 c3", True)
    assert contexts[2] == ("q1 q2\na1 a2 a3\nb1 b2 b3", False)
    assert all(words([c])[0] <= 8 and c.startswith("q1 q2") for c, _ in contexts)


def test_a_long_question_keeps_its_end_and_leaves_the_steps_at_least_half():
    question = " ".join(f"w{i}" for i in range(50)) + " Which drug?"
    contexts = fitted_contexts(question, ["s1 x", "s2 y"], words, 20, 10_000)
    head = contexts[0][0]
    assert head.endswith("Which drug?") and words([head])[0] == 16  # 20 minus the 4 step words
    assert contexts[2] == (head + "\ns1 x\ns2 y", True)  # the question was cut: every step says so
    assert len({c.split("\n")[0] for c, _ in contexts}) == 1  # the same question text in every c_i
    steps = ["a b c d e f g h i j k l"] * 3
    contexts = fitted_contexts(question, steps, words, 20, 10_000)
    assert words([contexts[0][0]])[0] == 10  # half of the room


def test_when_not_even_the_newest_step_fits_its_end_does():
    step = " ".join(f"t{i}" for i in range(30))
    text, cut = fitted_contexts("q", ["first", step], words, 10, 1000)[2]
    assert cut and text == "q\n" + " ".join(f"t{i}" for i in range(21, 30))


def test_tail_cuts_at_word_starts_and_inside_a_word_only_when_it_must():
    assert tail_that_fits("alpha beta gamma", words, 2, 100) == "beta gamma"
    assert tail_that_fits("alpha beta gamma", words, 5, 8) == "gamma"  # the character limit binds
    assert tail_that_fits("A" * 50, lambda ts: [len(t) for t in ts], 7, 100) == "A" * 7
    assert tail_that_fits("   ", words, 5, 5) == "" and tail_that_fits("a b", words, 0, 5) == ""


def test_characters_bind_as_well_as_tokens():
    contexts = fitted_contexts("q", ["x" * 30, "y" * 30], words, 1000, 40)
    assert contexts[2] == ("q\n" + "y" * 30, True)


@pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "config.json").exists(), reason="the NLI judge is not exported")
def test_with_the_judge_every_newest_step_is_read_and_a_long_question_does_not_zero_the_gains():
    model = NliModel.load(quantize=False)
    estimator = NliEstimator(model, Blocking(None))
    steps = ["ST elevations in II, III and aVF indicate an inferior myocardial infarction.",
             "Inferior infarctions often involve the right ventricle, which depends on preload.",
             "Nitroglycerin reduces preload, which explains the hypotension.",
             "The right ventricle needs volume, so intravenous fluids restore preload and blood pressure."]
    vignette = ("A 54-year-old man has crushing substernal chest pain, hypertension and diabetes. " * 12
                + "Which is the most appropriate next step? A) intravenous fluids B) nitroglycerin C) metoprolol")
    hypothesis = "The answer is A) intravenous fluids."
    for question in (vignette, "x " * 900):  # ~200 tokens; 1,800 characters (both once gave gains of exactly 0)
        contexts = estimator.fit_contexts(question, steps, hypothesis)
        budget = model.premise_budget(hypothesis)
        assert all(model.count_tokens([c])[0] <= budget for c, _ in contexts)
        assert all(c.endswith(step) for (c, _), step in zip(contexts[1:], steps))  # the model reads every step
        scores = asyncio.run(estimator.score_prefixes(question, steps, "A) intravenous fluids", Deadline()))
        gains = [scores.nll[i] - scores.nll[i + 1] for i in range(len(steps))]
        assert all(g != 0.0 for g in gains) and all(scores.truncated)


def test_the_similarity_scorer_fits_contexts_to_the_embedders_input():
    from kb.embedder import SentenceTransformerEmbedder
    from server.backends.judges.similarity import SimilarityPairScorer

    scorer = SimilarityPairScorer(SentenceTransformerEmbedder())
    estimator = NliEstimator(scorer, Blocking(None), max_chars=100_000)
    steps = [f"Step {i} says that drug {i} lowers the blood pressure of adults." for i in range(40)]
    contexts = estimator.fit_contexts("Which drug lowers blood pressure?", steps, "The answer is drug 39.")
    room = scorer.premise_budget("The answer is drug 39.")
    assert room == scorer.embedder.max_seq_length - 2
    assert all(scorer.count_tokens([c])[0] <= room and c.endswith(s) for (c, _), s in zip(contexts[1:], steps))
    assert contexts[-1][1] and not contexts[1][1]

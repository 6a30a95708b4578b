"""The caption-quality harness (bench/caption_quality.py) against scripted judge answers from
the OpenAI TEST DOUBLE: the harness's arithmetic and protocol, not a model's quality."""

from __future__ import annotations

from bench.caption_quality import SET, load_set, run
from tests.stages.caption_helpers import openai_double, stats

CLAIMS = ["There are vertical colour bars.", "A dog runs across the frame."]
ANSWERS = [
    {"contains": "Split this caption into atomic claims", "content": {"claims": CLAIMS}},
    {"contains": f"Claim: {CLAIMS[0]}", "content": {"verdict": "supported"}},
    {"contains": "Assertion: The picture shows vertical bars", "content": {"verdict": "yes"}},
    {"contains": "Assertion: The whole frame is a single flat red", "content": {"verdict": "yes"}},
]


def test_precision_and_recall_from_scripted_judges():
    items = load_set(SET)
    n_assertions = sum(len(it["assertions"]) for it in items)
    assert len(items) >= 4 and n_assertions >= 10
    with openai_double(answers=ANSWERS) as (url, _):
        ours, ref = run(url, url, fps=2.0, max_frames=2, frame_max_side=64)
        served = stats(url)
    assert ref is None
    assert all(it.error is None and it.claims == CLAIMS for it in ours.items)
    assert ours.precision == 0.5  # one of the two claims supported, for every item
    assert ours.recall == 2 / n_assertions  # unscripted verdicts default to "no"
    calls = len(items) * (1 + 1 + len(CLAIMS)) + n_assertions  # caption, split, claims, recall
    assert served["chats"] == calls

"""Sampling, streamed text and scoring windows: the numpy parts of the decode loop."""

from __future__ import annotations

import numpy as np
import pytest

from genserve.scoring import score_windows
from genserve.workers.autoregressive.sampling import SamplingParams, TextState, next_token

LOGITS = np.log(np.array([0.5, 0.25, 0.15, 0.06, 0.04]))  # probabilities known exactly
NOTHING_SEEN = np.zeros(5, dtype=bool)


def draws(params: SamplingParams, seed: int = 0, n: int = 400, logits: np.ndarray = LOGITS) -> list[int]:
    rng = np.random.default_rng(seed)
    return [next_token(logits, params, NOTHING_SEEN, rng)[0] for _ in range(n)]


def test_temperature_zero_is_greedy_and_reports_the_unscaled_logprob():
    """Greedy takes the argmax and reports its log-probability under the plain softmax."""
    token, logprob = next_token(LOGITS, SamplingParams(temperature=0.0), NOTHING_SEEN, np.random.default_rng(0))
    assert token == 0 and logprob == pytest.approx(np.log(0.5))


def test_same_seed_same_tokens_and_other_seeds_differ():
    """The draw depends on the seed only."""
    params = SamplingParams(temperature=1.0)
    assert draws(params, seed=5) == draws(params, seed=5)
    assert draws(params, seed=5) != draws(params, seed=6)


def test_sampling_follows_the_distribution():
    """At temperature 1 token frequencies match the softmax probabilities."""
    counts = np.bincount(draws(SamplingParams(), n=4000), minlength=5) / 4000
    np.testing.assert_allclose(counts, np.exp(LOGITS), atol=0.03)


def test_top_k_keeps_only_the_k_most_probable_tokens():
    """top_k=2 never draws beyond the two best tokens; top_k=1 is greedy."""
    assert set(draws(SamplingParams(top_k=2))) == {0, 1}
    assert set(draws(SamplingParams(top_k=1))) == {0}


def test_top_p_keeps_the_smallest_set_reaching_p():
    """top_p=0.8 keeps {0.5, 0.25, 0.15} (0.75 < 0.8 needs the third); 0.45 keeps one token."""
    assert set(draws(SamplingParams(top_p=0.8))) == {0, 1, 2}
    assert set(draws(SamplingParams(top_p=0.45))) == {0}


def test_repetition_penalty_pushes_seen_tokens_down():
    """A seen token's positive logit is divided by the penalty, a negative one multiplied."""
    logits = np.array([2.0, 1.5, -1.0])
    seen = np.array([True, False, True])
    token, _ = next_token(logits, SamplingParams(temperature=0.0, repetition_penalty=2.0), seen, np.random.default_rng(0))
    assert token == 1  # 2.0 -> 1.0 falls below 1.5
    token, logprob = next_token(logits, SamplingParams(temperature=0.0, repetition_penalty=1.0), seen, np.random.default_rng(0))
    assert token == 0  # 1 is off


def test_temperature_scales_the_reported_logprob():
    """The log-probability is the token's under the temperature-scaled distribution."""
    rng = np.random.default_rng(0)
    token, logprob = next_token(LOGITS, SamplingParams(temperature=0.5, top_k=1), NOTHING_SEEN, rng)
    scaled = LOGITS / 0.5
    assert token == 0 and logprob == pytest.approx(scaled[0] - np.log(np.exp(scaled).sum()))


def byte_tokens(*pieces: bytes) -> list[bytes]:
    return list(pieces)


def test_characters_split_across_tokens_are_decoded_once_complete():
    """A 2-byte character split over two tokens: the first token has no text, the second all of it."""
    state = TextState(byte_tokens(b"caf", b"\xc3", b"\xa9!"), stops=[])
    for token in (0, 1, 2):
        state.add(token, 0.0)
    assert state.text == "café!" and [t[1] for t in state.tokens] == ["caf", "", "é!"]


def test_stop_string_cuts_the_text_and_the_straddling_token():
    """The stop string and everything after it go; the token holding its start keeps its head."""
    state = TextState(byte_tokens(b"Hello", b" wor", b"ld. More"), stops=["ld."])
    assert not state.add(0, 0.0) and not state.add(1, 0.0)
    assert state.add(2, 0.0)
    assert state.text == "Hello wor" and [t[1] for t in state.tokens] == ["Hello", " wor"]


def test_a_token_starting_with_the_stop_string_is_dropped():
    """When the stop string starts a token, that token is not returned at all."""
    state = TextState(byte_tokens(b"one", b"\n\ntwo"), stops=["\n\n"])
    state.add(0, 0.0)
    assert state.add(1, 0.0)
    assert state.text == "one" and len(state.tokens) == 1


def test_text_that_may_begin_a_stop_string_is_held_back_from_the_stream():
    """Tokens are streamed only once no later token can turn them into a stop string."""
    state = TextState(byte_tokens(b"a", b"b", b"X", b"c"), stops=["bXY"])
    state.add(0, 0.0)
    assert state.ready() == (0, [(0, "a", 0.0)])
    state.add(1, 0.0)
    assert state.ready() == (1, [])  # "b" may start "bXY"
    state.add(2, 0.0)
    assert state.ready() == (1, [])  # "bX" too
    state.add(3, 0.0)  # "bXc" cannot: both go
    assert state.ready() == (1, [(1, "b", 0.0), (2, "X", 0.0), (3, "c", 0.0)])
    assert state.ready(final=True) == (4, [])


@pytest.mark.parametrize(("n", "block"), [(2, 8), (8, 8), (9, 8), (31, 8), (100, 7)])
def test_score_windows_score_every_token_once_with_half_a_context(n, block):
    """Tokens 1..n-1 are each scored once, inside a window of at most `block` tokens."""
    scored = []
    for start, end, first in score_windows(n, block):
        assert 0 <= start < first <= end <= n and end - start <= block
        assert first - start >= min(block // 2, first)  # context before the first scored token
        scored += range(first, end)
    assert scored == list(range(1, n))


@pytest.mark.parametrize("vocabulary", [300, 4096, 5000, 50257])
def test_inverse_cdf_finds_the_draw_s_token_at_every_vocabulary_size(vocabulary):
    """One cumulative sum (small vocabularies) or blocks then one block (large ones, with a
    short last block): the first token whose cumulative weight exceeds the draw, never a
    truncated one."""
    from genserve.workers.autoregressive.sampling import inverse_cdf

    rng = np.random.default_rng(vocabulary)
    weights = np.exp(rng.standard_normal((6, vocabulary)) * 3)
    weights[1, : vocabulary // 2] = 0.0  # truncated away: a draw must land after them
    weights[2, rng.random(vocabulary) < 0.9] = 0.0
    fractions = rng.random(6)
    fractions[3] = 0.0
    got = inverse_cdf(weights.copy(), fractions)
    for row, (w, f) in enumerate(zip(weights, fractions)):
        cdf = np.cumsum(w)
        want = int(np.searchsorted(cdf, f * cdf[-1], side="right"))
        while w[want] == 0.0:
            want -= 1
        assert got[row] == want and w[got[row]] > 0


def test_a_workspace_reuses_its_buffers_and_changes_no_draw():
    from genserve.workers.autoregressive.sampling import Workspace, next_tokens

    logits = np.random.default_rng(3).standard_normal((4, 5000)).astype(np.float32)
    params = [SamplingParams(temperature=t, top_k=k) for t, k in ((0.8, 0), (0.0, 0), (1.0, 40), (1.3, 0))]
    seen = [np.zeros(5000, dtype=bool)] * 4
    alone = next_tokens(logits, params, seen, [np.random.default_rng(i) for i in range(4)])
    workspace = Workspace()
    for _ in range(2):
        shared = next_tokens(logits, params, seen, [np.random.default_rng(i) for i in range(4)], workspace)
        assert (alone[0] == shared[0]).all() and (alone[1] == shared[1]).all()
    first = workspace.get("x", 4, 5000)
    assert workspace.get("x", 2, 5000).base is first.base  # fewer rows: the same buffer

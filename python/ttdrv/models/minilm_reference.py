"""A pure-numpy all-MiniLM-L6-v2, the reference the device model is checked against (docs/minilm.md).

Written from the descriptions of BERT (Devlin et al. 2019, and Hugging Face's ``BertModel``: post-layer-norm
encoder, GELU in the erf form, the extended attention mask ``(1 - mask) * -10000`` added to the scores) and of
sentence-transformers' ``Pooling`` (mean over the tokens the attention mask keeps) and ``Normalize`` (L2) modules;
it imports nothing from ttdrv and shares no code with the device model: plain numpy on float64 arrays, heads split
with reshape/transpose, the softmax and layer norm written out.
"""

from __future__ import annotations

import math

import numpy as np

_erf = np.frompyfunc(math.erf, 1, 1)


def gelu(x: np.ndarray) -> np.ndarray:
    """GELU, erf form: x * Phi(x)."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * g + b


def encode(config: dict, weights: dict[str, np.ndarray], ids: np.ndarray, mask: np.ndarray,
           layers: int | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """Embeddings ``[batch, hidden]`` of token ids ``[batch, seq]`` with attention mask ``[batch, seq]`` (1 token,
    0 padding), and the hidden states after the embeddings and after each layer (``[batch, seq, hidden]``)."""
    w = {k: v.astype(np.float64) for k, v in weights.items() if v.dtype.kind == "f"}
    nb, seq = ids.shape
    hid, nh, eps = config["hidden_size"], config["num_attention_heads"], config["layer_norm_eps"]
    d = hid // nh
    x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:seq][None]
         + w["embeddings.token_type_embeddings.weight"][0][None, None])
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    states = [x]
    ext = (1.0 - mask.astype(np.float64))[:, None, None, :] * -10000.0  # [batch, 1, 1, seq]

    def dense(v, name):
        return v @ w[name + ".weight"].T + w[name + ".bias"]

    def heads(v):  # [batch, seq, hid] -> [batch, heads, seq, d]
        return v.reshape(nb, seq, nh, d).transpose(0, 2, 1, 3)

    n = config["num_hidden_layers"] if layers is None else layers
    for i in range(n):
        p = f"encoder.layer.{i}."
        q, k, v = (heads(dense(x, p + "attention.self." + m)) for m in ("query", "key", "value"))
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d) + ext
        s = np.exp(s - s.max(-1, keepdims=True))
        prob = s / s.sum(-1, keepdims=True)
        ctx = (prob @ v).transpose(0, 2, 1, 3).reshape(nb, seq, hid)
        h = layer_norm(dense(ctx, p + "attention.output.dense") + x, w[p + "attention.output.LayerNorm.weight"],
                       w[p + "attention.output.LayerNorm.bias"], eps)
        f = dense(gelu(dense(h, p + "intermediate.dense")), p + "output.dense")
        x = layer_norm(f + h, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
        states.append(x)
    m = mask.astype(np.float64)[:, :, None]
    pooled = (x * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return pooled, states

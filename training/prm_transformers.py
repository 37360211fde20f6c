"""A transformers sequence classifier as the PRM: fine-tuned on the state text to predict
the episode's outcome (cross-entropy on Monte-Carlo labels, as the linear PRM).

Needs the `prm` extra (torch, transformers) and a local model directory (`--prm-model`):
nothing is downloaded. Runs on a GPU where torch sees one; on a CPU it is slow, and the
linear PRM is the better choice there. Hyper-parameters come from `PrmConfig.extra`:
epochs (1), batch_size (32), lr (2e-5), max_length (256).
"""

from __future__ import annotations

import numpy as np

from training.prm import PrmConfig, StateInputs


class TransformersPrm:
    kind = "transformers"

    def __init__(self, config: PrmConfig) -> None:
        try:
            import torch
            import transformers
        except ImportError as exc:
            raise RuntimeError(
                f"the transformers PRM needs torch and transformers ({exc}): "
                "pip install 'escalator[prm]'"
            ) from None
        if not config.model:
            raise RuntimeError("the transformers PRM needs a local model directory")
        self.config = config
        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(config.model)
        self.tokenizer.truncation_side = "left"  # the newest turns matter most
        self.model = transformers.AutoModelForSequenceClassification.from_pretrained(
            config.model, num_labels=2
        ).to(self.device)
        extra = config.extra
        self.epochs = int(extra.get("epochs", 1))
        self.batch_size = int(extra.get("batch_size", 32))
        self.lr = float(extra.get("lr", 2e-5))
        self.max_length = int(extra.get("max_length", 256))

    def _texts(self, inputs: StateInputs) -> list[str]:
        if inputs.texts is None:
            raise RuntimeError(
                "the transformers PRM reads the transcript: log with capture_content"
            )
        return inputs.texts

    def fit(self, inputs: StateInputs, success: np.ndarray, train: np.ndarray) -> None:
        torch = self.torch
        texts = self._texts(inputs)
        rows = np.flatnonzero(train)
        rng = np.random.default_rng(self.config.seed)
        if len(rows) > self.config.max_rows:
            rows = rng.choice(rows, self.config.max_rows, replace=False)
        torch.manual_seed(self.config.seed)
        optimiser = torch.optim.AdamW(self.model.parameters(), lr=self.lr)
        self.model.train()
        for _ in range(self.epochs):
            order = rng.permutation(rows)  # each training row once per epoch
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                encoded = self._encode([texts[i] for i in batch])
                labels = torch.tensor(success[batch].astype(np.int64), device=self.device)
                loss = self.model(**encoded, labels=labels).loss
                optimiser.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                optimiser.step()
        self.model.eval()

    def state_value(self, inputs: StateInputs) -> np.ndarray:
        torch = self.torch
        texts = self._texts(inputs)
        unique = sorted(set(texts))
        values: dict[str, float] = {}
        with torch.no_grad():
            for start in range(0, len(unique), self.batch_size * 4):
                chunk = unique[start : start + self.batch_size * 4]
                logits = self.model(**self._encode(chunk)).logits
                p = torch.softmax(logits.float(), dim=-1)[:, 1].cpu().numpy()
                values.update(zip(chunk, p.tolist(), strict=True))
        return np.array([values[t] for t in texts])

    def _encode(self, texts: list[str]) -> dict[str, object]:
        encoded = self.tokenizer(
            texts, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt"
        )
        return {k: v.to(self.device) for k, v in encoded.items()}

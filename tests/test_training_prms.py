"""The pluggable PRMs besides the linear default: an LLM judge over real HTTP, and a
transformers sequence classifier fine-tuned on the state text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from demo.sim.world import write_logs
from tests.fake_upstream import FakeUpstream
from training.dataset import load_dataset
from training.pipeline import TrainConfig, train
from training.prm import PrmConfig, StateInputs
from training.prm_judge import JudgeError, JudgePrm


def inputs_of(texts: list[str]) -> StateInputs:
    return StateInputs(np.zeros((len(texts), 0), dtype=np.float32), texts, [], 0)


def test_judge_reads_yes_and_no_off_the_first_token_logprobs(fake_upstream: FakeUpstream) -> None:
    judge = JudgePrm(
        PrmConfig(kind="judge", endpoint=fake_upstream.base_url, judge_model="prm-judge")
    )
    texts = [
        "tool: 12 rows; totals match",
        "tool: error: column not found",
        "tool: 12 rows; totals match",
    ]
    assert judge.raw(inputs_of(texts)).round(3).tolist() == [0.8, 0.1, 0.8]


def test_judge_endpoint_failures_are_named(fake_upstream: FakeUpstream) -> None:
    judge = JudgePrm(
        PrmConfig(kind="judge", endpoint=fake_upstream.base_url, judge_model="error-500")
    )
    with pytest.raises(JudgeError, match="answered 500"):
        judge.raw(inputs_of(["x"]))
    gone = JudgePrm(PrmConfig(kind="judge", endpoint="http://127.0.0.1:9/v1", judge_model="m"))
    with pytest.raises(JudgeError, match="unreachable"):
        gone.raw(inputs_of(["x"]))


def test_pipeline_trains_with_the_judge_prm(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    write_logs(tmp_path / "logs", 300, seed=8, budget=2)
    result = train(
        TrainConfig(
            logs=str(tmp_path / "logs"),
            out=str(tmp_path / "out"),
            budgets=(1.0,),
            prm="judge",
            judge_endpoint=fake_upstream.base_url,
            judge_model="prm-judge",
        )
    )
    # Platt-scaled judge probabilities are better than the base rate on held-out steps.
    assert result.calibration.brier < result.calibration.brier_base_rate
    budget = result.budgets[0]
    assert budget.table_dir is None  # the proxy cannot run a judge: no table artifact
    assert (budget.learned_dir / "helper.json").exists()
    assert "PRM `judge`" in Path(result.report or "").read_text()


def tiny_classifier(directory: Path, texts: list[str]) -> None:
    """A small random BERT and a word-level tokenizer built here: nothing is downloaded."""
    transformers = pytest.importorskip("transformers")
    transformers.set_seed(0)  # the random initial weights, whatever ran before
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    tokenizer.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=specials))
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]"
    )
    fast.save_pretrained(directory)
    config = transformers.BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=2,
    )
    transformers.BertForSequenceClassification(config).save_pretrained(directory)


def test_transformers_prm_learns_from_the_state_text(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from training.prm_transformers import TransformersPrm

    write_logs(tmp_path / "logs", 600, seed=9, budget=2)
    data, _ = load_dataset(tmp_path / "logs")
    assert data.texts is not None
    tiny_classifier(tmp_path / "model", data.texts)
    prm = TransformersPrm(
        PrmConfig(
            kind="transformers",
            model=str(tmp_path / "model"),
            extra={"lr": 1e-3, "epochs": 3, "batch_size": 64, "max_length": 128},
        )
    )
    inputs = inputs_of(data.texts)
    z = data.success[data.session]
    train_rows = data.session % 5 != 0
    prm.fit(inputs, z, train_rows)
    value = prm.state_value(inputs)[~train_rows]
    held = np.array(data.texts)[~train_rows]
    doomed = np.array(["corrupted" in t for t in held])
    # Tasks whose observations say the data is corrupted almost always fail. (Over eight
    # initial weights the doomed states' mean stayed below a third of the others'.)
    assert value[doomed].mean() < 0.5 * value[~doomed].mean()

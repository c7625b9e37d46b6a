"""`assistant train` on a tiny model made here (a 2-layer Llama and a word-level tokenizer, no hub): the loss
falls, LoRA merges into a plain model, Ctrl-C leaves a checkpoint that a rerun resumes, and an Optuna study in
which a trial crashes finishes with the other trial's parameters."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from assistant.plugins.train import TrainConfig, TrainError, load_samples, sweep, train

PAIRS = [(f"what is {a} plus {b}", f"{a} plus {b} is {a + b}") for a in range(6) for b in range(6)]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


def make_tiny_model(folder: Path) -> Path:
    """A 2-layer Llama (about 30k parameters) and a word-level tokenizer with a chat template, saved in folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    words = [w for q, a in PAIRS for w in (q, a)] + ["user : assistant :"]
    tok.train_from_iterator(words, trainers.WordLevelTrainer(special_tokens=["<unk>", "<pad>", "<eos>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")
    fast.chat_template = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }}\n{% endfor %}"
                          "{% if add_generation_prompt %}assistant : {% endif %}")
    fast.save_pretrained(folder)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id, bos_token_id=None)
    import torch

    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture
def data(tmp_path) -> Path:
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps({"instruction": q, "response": a}) + "\n" for q, a in PAIRS))
    return path


def config(tiny_model, data, out, **overrides) -> TrainConfig:
    settings = dict(data=str(data), base_model=str(tiny_model), out_dir=str(out), steps=40, batch_size=4,
                    learning_rate=5e-3, block_size=32, precision="fp32", logging_steps=2, save_steps=20)
    settings.update(overrides)
    return TrainConfig(**settings)


def test_full_fine_tuning_lowers_the_loss_and_leaves_a_usable_model(tiny_model, data, tmp_path, isolated_home):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "ft"
    result = train(config(tiny_model, data, out), quiet=True)
    assert result.steps == 40 and result.samples == 35 and result.eval_loss is not None  # 1 of 36 held out
    assert result.train_loss < result.first_loss * 0.6, result.losses
    assert result.eval_loss < result.eval_loss_before
    assert (out / "config.json").exists() and (out / "tokenizer.json").exists() and (out / "loss.png").exists()
    info = json.loads((out / "train_info.json").read_text())
    assert info["steps"] == 40 and info["eval_loss"] == pytest.approx(result.eval_loss)
    # The curve the dashboard reads, and the model list's entry.
    curve = [json.loads(line) for line in (isolated_home / "runs" / "train" / "ft" / "metrics.jsonl").open()]
    assert [p["step"] for p in curve if "loss" in p][:2] == [1, 2] and any("eval_loss" in p for p in curve)
    from assistant.plugins.train import trained_models
    from assistant.tui.sources import read_train

    assert str(out) in trained_models()
    drawn = read_train(isolated_home / "runs" / "train")[0]
    assert drawn.loss[-1] == pytest.approx(result.train_loss, abs=1e-4)
    assert drawn.eval_loss[-1] == pytest.approx(result.eval_loss, abs=1e-4)  # the dashboard shows it too
    model = AutoModelForCausalLM.from_pretrained(out)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_lora_is_merged_into_a_plain_model(tiny_model, data, tmp_path, isolated_home):
    out = tmp_path / "lora"
    result = train(config(tiny_model, data, out, lora_r=4, steps=20, learning_rate=2e-2), quiet=True)
    assert result.train_loss < result.first_loss
    assert not (out / "adapter_config.json").exists()  # merged: --model DIR needs no peft
    from transformers import AutoModelForCausalLM

    names = {n for n, _ in AutoModelForCausalLM.from_pretrained(out).named_parameters()}
    assert not any("lora" in n for n in names)


def test_ctrl_c_stops_with_a_checkpoint_and_a_rerun_resumes(tiny_model, data, tmp_path, isolated_home, monkeypatch):
    from transformers import TrainerCallback

    import assistant.plugins.train as train_module

    class CtrlCAtStep5(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 5:
                os.kill(os.getpid(), signal.SIGINT)  # what the terminal sends; the recorder stops at the next step

    real = train_module.Recorder.callback
    monkeypatch.setattr(train_module.Recorder, "callback", lambda self: [real(self), CtrlCAtStep5()])
    monkeypatch.setattr("transformers.Trainer.__init__", _flatten_callbacks(__import__("transformers").Trainer.__init__))
    out = tmp_path / "resumable"
    first = train(config(tiny_model, data, out, steps=12), quiet=True)
    assert first.interrupted and first.steps in (5, 6)
    assert (out / "checkpoints" / f"checkpoint-{first.steps}").exists() and not (out / "config.json").exists()
    monkeypatch.undo()
    second = train(config(tiny_model, data, out, steps=12), quiet=True)
    assert not second.interrupted and second.steps == 12 and (out / "config.json").exists()
    assert [s for s, _ in second.losses][0] > first.steps  # went on from the checkpoint, not from step 1


def _flatten_callbacks(init):
    def patched(self, *args, callbacks=None, **kwargs):
        flat = []
        for c in callbacks or []:
            flat += c if isinstance(c, list) else [c]
        return init(self, *args, callbacks=flat, **kwargs)

    return patched


def test_a_sweep_with_a_crashing_trial_finishes_with_the_other(tiny_model, data, tmp_path, isolated_home, capsys):
    calls = []

    def run(cfg, **kwargs):
        calls.append(cfg)
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory (planted)")
        return train(cfg, **kwargs)

    out = tmp_path / "sweep"
    summary = sweep(config(tiny_model, data, out, steps=6, save_steps=3), 2, min_free_gb=0.0, run=run)
    assert summary["best_trial"] == 1
    ok = calls[1]
    assert summary["params"] == {"learning_rate": ok.learning_rate, "batch_size": ok.batch_size, "lora_r": ok.lora_r}
    states = {t["number"]: (t["value"], t.get("error", "")) for t in summary["trials"]}
    assert states[0][0] == float("inf") and "planted" in states[0][1]
    assert json.loads((out / "best_params.json").read_text())["best_trial"] == 1
    # The study is stored: asking again for 2 trials runs none.
    calls.clear()
    sweep(config(tiny_model, data, out, steps=6), 2, min_free_gb=0.0, run=run)
    assert calls == [] and "2 trials already" in capsys.readouterr().out


def test_a_trial_is_skipped_when_memory_is_short(tiny_model, data, tmp_path, isolated_home):
    with pytest.raises(TrainError, match="no trial finished"):
        sweep(config(tiny_model, data, tmp_path / "s", steps=2), 1, min_free_gb=1e9)
    import optuna

    study = optuna.load_study(study_name="train", storage=f"sqlite:///{tmp_path / 's' / 'study.db'}")
    assert study.trials[0].state.name == "PRUNED" and "below" in study.trials[0].user_attrs["skipped"]


def test_samples_in_every_accepted_shape_and_clear_errors(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join([
        json.dumps({"instruction": "a", "response": "b"}),
        json.dumps({"prompt": "c", "completion": "d"}),
        json.dumps({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "e"},
                                 {"role": "assistant", "content": "f"}]}),
        json.dumps({"text": "g h"}),
        "not json",
        json.dumps({"messages": [{"role": "user", "content": "no answer"}]}),
    ]) + "\n")
    samples = load_samples(path)
    assert [s[1] for s in samples] == ["b", "d", "f", "g h"]
    assert samples[2][0][0]["role"] == "system" and samples[3][0] == []
    (tmp_path / "bad.jsonl").write_text('{"foo": 1}\n')
    with pytest.raises(TrainError, match="no usable sample"):
        load_samples(tmp_path / "bad.jsonl")
    with pytest.raises(TrainError, match="cannot read"):
        load_samples(tmp_path / "missing.jsonl")
    with pytest.raises(TrainError, match="--out-dir is required"):
        TrainConfig(data=str(path)).check()

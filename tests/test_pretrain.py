"""`python train.py pretrain` end to end on the tiny preset: the optimizer, the schedule, learning, exact resume."""
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import data
import electramed
import pretrain
import train
import runtime

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def corpus(data_dir):
    return sorted((data_dir / "pretrain" / "hoc" / "text").glob("*.txt"))[:150]


@pytest.fixture(scope="module")
def shards(corpus, scivocab, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    data.build_shards(corpus, scivocab, out, max_length=64, processes=1)
    return out


def run_args(out, scivocab, shards, *extra):
    return ["pretrain", "--preset", "tiny", "--vocab", str(scivocab), "--shards", str(shards), "--out", str(out),
            "--device", "cpu", *extra]


def read_log(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def test_learning_rate_schedule_is_electras():
    config = pretrain.PretrainConfig(learning_rate=1e-3, batch_size=8, max_length=64, train_steps=1000, warmup_steps=100)
    assert pretrain.learning_rate_at(0, config) == 0.0  # warm-up and decay applied together from step 0
    assert pretrain.learning_rate_at(50, config) == pytest.approx(1e-3 * 0.95 * 0.5)
    assert pretrain.learning_rate_at(100, config) == pytest.approx(1e-3 * 0.9)
    assert pretrain.learning_rate_at(1000, config) == 0.0


@pytest.mark.parametrize("update", ["fused_update", "foreach_update"])
def test_optimizer_is_adam_without_bias_correction_and_decoupled_decay(update, monkeypatch):
    """Both updates, each against the official rule by hand: the fused kernel that CPU and CUDA use, and the foreach
    passes that XLA uses (run here on the CPU in place of the fused one)."""
    monkeypatch.setattr(runtime, "fused_update", getattr(runtime, update))
    if update == "fused_update":  # and on the CPU the fused kernel is what runs: the foreach passes are XLA's
        monkeypatch.setattr(runtime, "foreach_update", None)
    torch.manual_seed(0)
    matrix, bias = torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(4))
    optimizer = runtime.AdamWeightDecay([{"params": [matrix], "weight_decay": 0.01}, {"params": [bias]}], eps=1e-6)
    start_matrix, start_bias = matrix.detach().clone(), bias.detach().clone()
    grads = [(torch.randn(3, 4), torch.randn(4)) for _ in range(2)]
    m_w = v_w = m_b = v_b = 0
    expected_matrix, expected_bias = start_matrix.clone(), start_bias.clone()
    for grad_matrix, grad_bias in grads:
        matrix.grad, bias.grad = grad_matrix.clone(), grad_bias.clone()
        optimizer.step(torch.tensor(0.1))
        # the official update, by hand: no bias correction, decay added to the update of the matrix only
        m_w, v_w = 0.9 * m_w + 0.1 * grad_matrix, 0.999 * v_w + 0.001 * grad_matrix ** 2
        m_b, v_b = 0.9 * m_b + 0.1 * grad_bias, 0.999 * v_b + 0.001 * grad_bias ** 2
        expected_matrix -= 0.1 * (m_w / (v_w.sqrt() + 1e-6) + 0.01 * expected_matrix)
        expected_bias -= 0.1 * (m_b / (v_b.sqrt() + 1e-6))
    torch.testing.assert_close(matrix.detach(), expected_matrix)
    torch.testing.assert_close(bias.detach(), expected_bias)


def test_weight_decay_groups_skip_layernorm_and_biases_and_share_embeddings():
    model = electramed.ElectraForPretraining(electramed.preset("tiny", vocab_size=100))
    decay, no_decay = runtime.parameter_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all("norm" in names[id(p)].lower() or names[id(p)].endswith("bias") for p in no_decay["params"])
    assert not any(names[id(p)].endswith("bias") for p in decay["params"])
    all_params = decay["params"] + no_decay["params"]
    assert len({id(p) for p in all_params}) == len(all_params) == len(list(model.parameters()))


def test_keep_freed_memory_sets_glibcs_mmap_and_trim_thresholds(monkeypatch):
    """The settings are applied (the page faults they save depend on the machine: `python bench.py faults`)."""
    calls = []

    class FakeLibc:
        def mallopt(self, parameter, value):
            calls.append((parameter, value))
            return 1

    monkeypatch.setattr(runtime.platform, "libc_ver", lambda: ("glibc", "2.35"))
    monkeypatch.setattr(runtime.ctypes, "CDLL", lambda name: FakeLibc() if name == "libc.so.6" else None)
    runtime.keep_freed_memory()
    # <malloc.h>: M_MMAP_THRESHOLD = -3 (32 MiB, glibc's largest), M_TRIM_THRESHOLD = -1 (never trim)
    assert sorted(calls) == [(-3, 32 * 2 ** 20), (-1, 2 ** 31 - 1)]
    calls.clear()
    monkeypatch.setattr(runtime.platform, "libc_ver", lambda: ("", ""))  # musl, macOS, Windows: nothing
    runtime.keep_freed_memory()
    assert calls == []


def test_load_pretrained_returns_a_model_in_eval_mode(tmp_path):
    torch.manual_seed(0)
    electramed.save_pretrained(electramed.ElectraForPretraining(electramed.preset("tiny", vocab_size=100)), tmp_path)
    ids = torch.tensor([[2, 10, 20, 30, 3]])
    first, second = electramed.load_pretrained(tmp_path), electramed.load_pretrained(tmp_path)
    assert not first.training and not any(module.training for module in first.modules())
    logits = [model.discriminator(ids, torch.ones_like(ids), torch.zeros_like(ids)) for model in (first, second)]
    assert torch.equal(*logits)  # dropout off: two loads (and two calls) agree exactly


def test_a_tiny_run_on_real_pubmed_text_lowers_the_loss(scivocab, shards, tmp_path, monkeypatch):
    # every parameter has Adam's moments before the first step (on XLA, step 1 is then the steady program: README
    # "Devices"), and the first step's learning rate is 0 (ELECTRA's warm-up starts at 0)
    first_step, step = [], runtime.AdamWeightDecay.step

    def recording_step(self, lr):
        if not first_step:
            first_step.append((float(lr), all(self.state.get(p) for g in self.param_groups for p in g["params"])))
        return step(self, lr)
    monkeypatch.setattr(runtime.AdamWeightDecay, "step", recording_step)
    assert train.main(run_args(tmp_path, scivocab, shards, "--train-steps", "80", "--log-every", "10")) == 0
    assert first_step == [(0.0, True)]
    log = read_log(tmp_path)
    assert [r["step"] for r in log] == list(range(10, 81, 10))
    assert log[-1]["loss"] < log[0]["loss"] and log[-1]["gen_loss"] < 0.8 * log[0]["gen_loss"], log
    # every log line carries the discriminator's progress, computed on the host (tests/test_fidelity.py checks it)
    assert all(0.0 <= r["disc_auc"] <= 1.0 and abs(r["disc_gain"]) < 1.0 for r in log), log
    try:  # TensorBoard mirrors metrics.jsonl when the package is installed (the test extra installs it)
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        pass
    else:
        events = EventAccumulator(str(tmp_path))
        events.Reload()
        assert [e.step for e in events.Scalars("disc_auc")] == list(range(10, 81, 10))
    exported = tmp_path / "electramed-hf"
    assert (exported / "discriminator" / "config.json").exists() and (exported / "generator" / "config.json").exists()
    from transformers import ElectraForPreTraining

    hf = ElectraForPreTraining.from_pretrained(exported / "discriminator").eval()
    ours = electramed.load_pretrained(exported).eval()
    ids = torch.tensor([[2, 1000, 2000, 3000, 3]])
    torch.testing.assert_close(hf(ids).logits, ours.discriminator(ids, torch.ones_like(ids), torch.zeros_like(ids)),
                               atol=1e-5, rtol=1e-5)


KILL_AT_STEP = """
import os, signal, sys, pretrain, train
schedule = pretrain.learning_rate_at
def learning_rate_at(step, config):  # SIGKILL (no clean-up at all) as step 24 begins, past the step-20 checkpoint
    if step == 23:
        os.kill(os.getpid(), signal.SIGKILL)
    return schedule(step, config)
pretrain.learning_rate_at = learning_rate_at
sys.exit(train.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_kill_and_resume_equals_an_uninterrupted_run(scivocab, shards, tmp_path):
    steps = ["--train-steps", "30", "--log-every", "1", "--save-every", "10"]
    assert train.main(run_args(tmp_path / "whole", scivocab, shards, *steps)) == 0
    killed = tmp_path / "killed"
    child = subprocess.run([sys.executable, "-c", KILL_AT_STEP, *run_args(killed, scivocab, shards, *steps)],
                           cwd=REPO, capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    assert [c.name for c in sorted((killed / "checkpoints").glob("step_*.pt"))] == ["step_0000010.pt",
                                                                                   "step_0000020.pt"]
    assert [r["step"] for r in read_log(killed)] == list(range(1, 24))  # logged past the checkpoint, then killed
    assert train.main(run_args(killed, scivocab, shards, *steps, "--resume")) == 0
    whole, resumed = read_log(tmp_path / "whole"), read_log(killed)
    assert [r["step"] for r in resumed] == list(range(1, 31))
    for a, b in zip(whole, resumed):  # bit for bit: every logged figure but the wall-clock speed
        differing = {k: (a[k], b[k]) for k in a if k != "tokens_per_s" and a[k] != b[k]}
        assert not differing, f"step {a['step']} (steps 1-20 from the killed process, 21-30 resumed): {differing}"
    final_whole = torch.load(tmp_path / "whole" / "checkpoints" / "step_0000030.pt", weights_only=False)["model"]
    final_resumed = torch.load(killed / "checkpoints" / "step_0000030.pt", weights_only=False)["model"]
    assert [k for k in final_whole if not torch.equal(final_whole[k], final_resumed[k])] == []


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(scivocab, shards, tmp_path, monkeypatch):
    forward = electramed.ElectraForPretraining.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        outputs = forward(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] > 7:
            outputs["loss"] = outputs["loss"] * float("nan")
        return outputs

    monkeypatch.setattr(electramed.ElectraForPretraining, "forward", poisoned)
    with pytest.raises(SystemExit, match="NaN or infinite before step 10.*step_0000005.pt"):
        train.main(run_args(tmp_path, scivocab, shards, "--train-steps", "20", "--log-every", "10",
                            "--save-every", "5"))
    checkpoints = sorted((tmp_path / "checkpoints").glob("step_*.pt"))
    assert [c.name for c in checkpoints] == ["step_0000005.pt"]
    state = torch.load(checkpoints[0], weights_only=False)
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_weights_that_overflow_are_never_saved_or_exported(scivocab, shards, tmp_path):
    """A finite loss, then an update that overflows the weights (lr 1e39 is a float64, inf as the step's float32):
    the run stops before it saves, and no model is exported."""
    with pytest.raises(SystemExit, match="the weights became NaN or infinite before step 1; stopping without saving"):
        train.main(run_args(tmp_path, scivocab, shards, "--train-steps", "1", "--learning-rate", "1e39",
                            "--warmup-steps", "0"))
    assert not list((tmp_path / "checkpoints").glob("step_*.pt")) and not (tmp_path / "electramed-hf").exists()


def test_the_newest_checkpoints_are_kept_five_by_default_as_the_official_keep_checkpoint_max(scivocab, shards,
                                                                                               tmp_path):
    for keep, out in ([], tmp_path / "default"), (["--keep-checkpoints", "2"], tmp_path / "two"):
        assert train.main(run_args(out, scivocab, shards, "--train-steps", "7", "--save-every", "1", *keep)) == 0
    assert [c.name for c in sorted((tmp_path / "default" / "checkpoints").glob("step_*.pt"))] == [
        f"step_000000{step}.pt" for step in range(3, 8)]
    assert [c.name for c in sorted((tmp_path / "two" / "checkpoints").glob("step_*.pt"))] == [
        "step_0000006.pt", "step_0000007.pt"]


def test_the_main_job_in_one_command_trains_a_vocab_builds_shards_and_pretrains(corpus, tmp_path):
    args = ["pretrain", "--corpus", *map(str, corpus[:40]), "--out", str(tmp_path), "--preset", "tiny",
            "--vocab-size", "600", "--train-steps", "3", "--log-every", "1", "--processes", "1"]
    assert train.main(args) == 0
    vocab = (tmp_path / "vocab.txt").read_text().splitlines()
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] and len(vocab) <= 600
    assert data.shards_problem(tmp_path / "shards", tmp_path / "vocab.txt", 64) is None
    assert len(read_log(tmp_path)) == 3


def test_without_a_corpus_it_trains_on_the_bundled_sample_and_says_so(tmp_path, capsys):
    assert train.main(["pretrain", "--out", str(tmp_path), "--preset", "tiny", "--vocab-size", "1000",
                       "--train-steps", "5", "--log-every", "2", "--processes", "1"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line for line in printed if "--corpus" in line] == [
        "no --corpus: using the bundled sample of 500 PubMed abstracts (bc5cdr-training-abstracts.txt, 0.7 MB) to try "
        "the pipeline; pass --corpus with real PubMed text for real work"]
    assert [s["path"] for s in json.loads((tmp_path / "shards" / "index.json").read_text())["sources"]] == [
        str(pretrain.SAMPLE_CORPUS)]
    assert f"wrote 1000 tokens -> {tmp_path / 'vocab.txt'}" in printed  # the size written, read back below
    assert len((tmp_path / "vocab.txt").read_text().splitlines()) == 1000
    # the run in one line (logged at steps 2, 4 and 5: the last line's window is step 5 alone), then where
    assert printed[-2].startswith("step 5 (mean of the last 1 step): loss ") and printed[-1].startswith("done: 5 steps")
    assert printed[-1].endswith(f"HuggingFace-format model in {tmp_path / 'electramed-hf'}")


def test_with_shards_that_do_not_exist_and_no_corpus_it_says_what_to_pass_and_exits_2(tmp_path, capsys):
    # the missing folder is named (not the long "no pre-training text" help, which is for a run given nothing)
    assert train.main(["pretrain", "--out", str(tmp_path), "--preset", "tiny", "--shards", str(tmp_path / "s")]) == 2
    error = capsys.readouterr().err
    assert error == f"error: {tmp_path / 's'}: no such folder (--shards names a folder that `train.py prepare` " \
                    "built; without it, --corpus builds them)\n"
    # a file given as --shards; shards without their vocabulary
    (tmp_path / "file").write_text("x")
    assert train.main(["pretrain", "--out", str(tmp_path / "o"), "--preset", "tiny", "--shards",
                       str(tmp_path / "file")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'file'}: a file, not a folder (--shards")
    (tmp_path / "built").mkdir()
    assert train.main(["pretrain", "--out", str(tmp_path / "o"), "--preset", "tiny", "--shards",
                       str(tmp_path / "built")]) == 2
    assert capsys.readouterr().err == f"error: --shards {tmp_path / 'built'}: pass --vocab too, the vocabulary the " \
                                      "shards were built with\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["built", "file"]  # nothing written


def test_the_summary_line_says_whether_the_discriminator_is_under_or_above_the_base_rate():
    record = {"step": 9, "loss": 9.5, "disc_loss": 0.3, "disc_auc": None}
    assert pretrain.summary_line({**record, "disc_gain": 0.0117}, 1).endswith(", 0.0117 nats under the base rate")
    assert pretrain.summary_line({**record, "disc_gain": -0.0117}, 3).endswith(", 0.0117 nats above the base rate")

"""`train.py pretrain` on the XLA CPU device (one device and SPMD over two) and with torchrun (2 gloo processes).

Each run is its own process: SPMD must be switched on before any XLA tensor exists, and torchrun starts its own.
The two XLA runs compile 3-4 graphs of a few seconds each; they run side by side.
"""
import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import data
import train

REPO = Path(__file__).resolve().parent.parent


def xla_available():
    try:
        import torch_xla  # noqa: F401
    except ImportError:
        return False
    return True


needs_xla = pytest.mark.skipif(not xla_available() and os.environ.get("CI") != "true",
                               reason="torch_xla is not installed (pip install -e '.[xla]')")


@pytest.fixture(scope="module")
def shards(data_dir, scivocab, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    corpus = sorted((data_dir / "pretrain" / "hoc" / "text").glob("*.txt"))[:150]
    data.build_shards(corpus, scivocab, out, max_length=64, processes=1)
    return out


def pretrain_command(out, scivocab, shards, device, *extra):
    return [sys.executable, str(REPO / "train.py"), "pretrain", "--preset", "tiny", "--vocab", str(scivocab),
            "--shards", str(shards), "--out", str(out), "--device", device, "--log-every", "1", *extra]


def read_log(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def free_port():
    """A TCP port no one listens on now (the OS picks it): a fixed port fails when another run holds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_together(commands):
    """Start the commands side by side; fail with the tail of stderr of any that fails."""
    children = [subprocess.Popen(command, env={**os.environ, **env}, cwd=REPO, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for command, env in commands]
    results = [child.communicate(timeout=600) for child in children]
    for child, (stdout, stderr) in zip(children, results):
        assert child.returncode == 0, stderr[-3000:]
    return [stdout + stderr for stdout, stderr in results]


@pytest.mark.slow
@needs_xla
def test_xla_learns_stops_compiling_spmd_equals_one_device_and_checkpoints_cross_devices(scivocab, shards, tmp_path):
    # A learning rate high enough that after 6 steps the generator is clearly past its initial loss (10.3 -> 9.3): a
    # checkpoint that did not load would show. A CPU run writes a step-6 checkpoint; both XLA runs (one device, SPMD
    # over two) resume from it (CPU -> XLA).
    fast = ["--learning-rate", "3e-3", "--warmup-steps", "2"]
    cpu_first = tmp_path / "cpu-first"
    assert train.main(pretrain_command(cpu_first, scivocab, shards, "cpu", *fast, "--train-steps", "8",
                                       "--save-every", "6")[2:]) == 0
    for name in ("one", "two"):
        (tmp_path / name / "checkpoints").mkdir(parents=True)
        (tmp_path / name / "checkpoints" / "step_0000006.pt").write_bytes(
            (cpu_first / "checkpoints" / "step_0000006.pt").read_bytes())
    xla = {"PJRT_DEVICE": "CPU", "CPU_NUM_DEVICES": "1"}
    steps = [*fast, "--train-steps", "12", "--save-every", "3", "--resume"]
    # SPMD logs every 2 steps: its log window then also goes on from a step's own sums, not only from the zeros that
    # start every window (as every step does at --log-every 1)
    one, two = run_together([
        (pretrain_command(tmp_path / "one", scivocab, shards, "xla", *steps), xla),
        (pretrain_command(tmp_path / "two", scivocab, shards, "xla", *steps, "--log-every", "2"),
         {**xla, "CPU_NUM_DEVICES": "2"})])
    assert "SPMD over 2 XLA devices" in two and "SPMD" not in one
    assert "resumed from" in one and "resumed from" in two
    single, spmd, cpu_log = read_log(tmp_path / "one"), read_log(tmp_path / "two"), read_log(cpu_first)
    assert [r["step"] for r in single] == list(range(7, 13)) and [r["step"] for r in spmd] == [8, 10, 12]
    # The claim: XLA continued from the checkpoint, not from a fresh model. XLA draws other masks than CPU torch, so
    # the two step-7 losses agree only statistically (one step's generator loss moves ~1%, ~0.1 nats, with the
    # masks), while a model that did not load would sit at the initial loss (step 1, ~1 nat higher). The bound is
    # the midpoint between the two hypotheses: half the progress of the first 6 steps, ~5x the mask noise.
    progress = cpu_log[0]["gen_loss"] - cpu_log[6]["gen_loss"]
    assert progress > 0.5 and abs(single[0]["gen_loss"] - cpu_log[6]["gen_loss"]) < progress / 2
    # the XLA steps go on learning: the generator's loss falls (the discriminator's rises and falls with what the
    # generator samples, README "Pre-training on a small budget"), and the total ends under where training began
    assert single[-1]["gen_loss"] < single[0]["gen_loss"] - 0.5 and single[-1]["loss"] < cpu_log[0]["loss"]
    # disc_auc is computed on the host from the step's own outputs at every log: no graph of its own
    assert all(0.0 <= record["disc_auc"] <= 1.0 for record in single + spmd)
    # The claim (README "Devices"): every graph is compiled in a process's first step (the step is one program from
    # step 1 on: nothing it reads is a constant traced into step 1 alone, and under SPMD it is sharded as the step's
    # outputs come back), none after, and SPMD compiles what one device compiles. How many graphs that is depends on
    # torch_xla's version (2 with torch_xla 2.9 here: the synced optimizer state, the step), so no absolute bound is
    # asserted. A step 1 compiled apart from the steady step (as before the optimizer state was made up front: 4
    # after step 7, 5 after step 8), or a graph recompiled every step (a changing shape, a host read inside the step),
    # grows the count after step 7 (two checkpoints are saved later); a window's zeros not marked replicated make the
    # second step of each SPMD window (8) another program, one more than one device compiles.
    compiles = [record["xla_compiles"] for record in single]
    assert compiles == [compiles[0]] * 6 and [record["xla_compiles"] for record in spmd] == [compiles[0]] * 3
    # One program over two devices computes the same numbers as over one, up to the order of float32 sums in the
    # partitioned reductions (the gradient all-reduce and the loss means): relative 1e-5 is ~100x that rounding (an
    # SPMD line is the mean of two steps, one device's lines each step's, rounded to 6 decimals: 1e-6 apart at most).
    for b in spmd:
        first, second = (a for a in single if a["step"] in (b["step"] - 1, b["step"]))
        for name in ("loss", "gen_loss", "disc_loss", "disc_accuracy"):
            assert b[name] == pytest.approx((first[name] + second[name]) / 2, rel=1e-5, abs=2e-6), (b["step"], name)
        # the AUC of the same scores (the window's last step), read back shard by shard under SPMD (runtime.to_host):
        # ties may round apart
        assert b["disc_auc"] == pytest.approx(second["disc_auc"], abs=1e-3), b["step"]

    # An XLA checkpoint resumes on plain CPU torch: CPU tensors, and training continues from its step and level.
    state = torch.load(tmp_path / "one" / "checkpoints" / "step_0000009.pt", map_location="cpu", weights_only=False)
    assert all(t.device.type == "cpu" for t in state["model"].values())
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    (resumed / "checkpoints" / "step_0000009.pt").write_bytes(
        (tmp_path / "one" / "checkpoints" / "step_0000009.pt").read_bytes())
    assert train.main(pretrain_command(resumed, scivocab, shards, "cpu", *steps)[2:]) == 0
    on_cpu = read_log(resumed)
    assert [r["step"] for r in on_cpu] == [10, 11, 12]
    # the same midpoint bound as above: CPU continues at the XLA run's level (other masks), not from the initial loss
    progress = cpu_log[0]["gen_loss"] - single[3]["gen_loss"]
    assert abs(on_cpu[0]["gen_loss"] - single[3]["gen_loss"]) < progress / 2


@pytest.mark.slow
def test_torchrun_two_gloo_processes_equal_one_process_with_the_same_global_batch(scivocab, shards, tmp_path):
    """2 processes x 1 micro-batch of 8 == 1 process x 2 accumulated micro-batches of 8: the same 16 rows, the same
    per-micro-batch seeds (runtime.step_seed), the same mean of the two gradients. The two processes are stopped by
    SIGTERM after step 3, between two log lines, and resumed: the line after the resume is the mean over both processes'
    windows (the checkpoint holds their mean, not rank 0's alone)."""
    steps = ["--train-steps", "5", "--batch-size", "16", "--log-every", "2"]
    # Each worker runs `train.main()` from an imported `train` module: what `torchrun train.py` does, with the hook below
    # set on the imported `pretrain` module, whose mutants (mutation testing picks them by module name) reach the workers.
    # With STOP_AT set, each worker sends itself SIGTERM as that step begins (it finishes the step, saves, exits 143).
    launcher = tmp_path / "launch_train.py"
    launcher.write_text(f"import os, signal, sys\nsys.path.insert(0, {str(REPO)!r})\nimport pretrain, train\n"
                        "stop_at, schedule, sent = int(os.environ.get('STOP_AT', '0')), pretrain.learning_rate_at, []\n"
                        "def learning_rate_at(step, config):\n"
                        "    if step + 1 == stop_at and not sent:\n"
                        "        sent.append(os.kill(os.getpid(), signal.SIGTERM))\n"
                        "    return schedule(step, config)\n"
                        "pretrain.learning_rate_at = learning_rate_at\nsys.exit(train.main())\n")
    two = pretrain_command(tmp_path / "two", scivocab, shards, "cpu", *steps)[2:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    stopped = subprocess.run(torchrun + [str(launcher)] + two, env={**os.environ, "OMP_NUM_THREADS": "1",
                                                                    "STOP_AT": "3"},
                             cwd=REPO, capture_output=True, text=True, timeout=600)
    assert stopped.returncode != 0 and "stopped at step 3" in stopped.stderr, stopped.stderr[-3000:]
    torchrun[-1] = f"--master_port={free_port()}"
    run_together([(torchrun + [str(launcher)] + two + ["--resume"], {"OMP_NUM_THREADS": "1"})])
    assert train.main(pretrain_command(tmp_path / "one", scivocab, shards, "cpu", *steps,
                                       "--accumulation-steps", "2")[2:]) == 0
    two, one = read_log(tmp_path / "two"), read_log(tmp_path / "one")
    assert [r["step"] for r in two] == [2, 4, 5]
    for a, b in zip(one, two):
        for name in ("loss", "gen_loss", "disc_loss", "gen_accuracy", "disc_accuracy"):
            assert a[name] == pytest.approx(b[name], rel=1e-6, abs=1e-7), (a["step"], name)
    assert not (tmp_path / "two" / "checkpoints" / "step_0000005.pt.tmp").exists()
    weights_one = torch.load(tmp_path / "one" / "checkpoints" / "step_0000005.pt", weights_only=False)["model"]
    weights_two = torch.load(tmp_path / "two" / "checkpoints" / "step_0000005.pt", weights_only=False)["model"]
    for name in weights_one:
        torch.testing.assert_close(weights_one[name], weights_two[name], rtol=1e-5, atol=1e-6)


@needs_xla
@pytest.mark.skipif(importlib.util.find_spec("libtpu") is not None, reason="this machine has libtpu: PJRT_DEVICE=TPU "
                    "may start")
def test_a_pjrt_device_that_is_not_here_is_one_line(scivocab, shards, tmp_path):
    """PJRT_DEVICE=TPU (or CUDA) on a machine without one: torch_xla raises when its runtime starts; one line, exit
    2, and no run folder. (The quick start's note suggests setting it.)"""
    out = tmp_path / "run"
    done = subprocess.run(pretrain_command(out, scivocab, shards, "xla", "--train-steps", "1"), cwd=REPO,
                          env={**os.environ, "PJRT_DEVICE": "TPU"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr == "error: --device xla: PJRT_DEVICE=TPU cannot be started here " \
        "(libtpu not found); unset it for the XLA CPU device\n", done.stderr[-3000:]
    assert not out.exists()

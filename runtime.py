"""What both training loops share (pre-training in pretrain.py, fine-tuning in tasks.py): ELECTRA's optimizer and
learning-rate schedule, the device a run trains on (cpu, cuda with torchrun, xla with SPMD), and checkpoint files.

References: google-research/electra model/optimization.py (AdamWeightDecayOptimizer, the polynomial-decay schedule with
its warm-up); torch_xla's SPMD and PJRT runtime for --device xla.
"""
import ctypes
import fcntl
import json
import os
import platform
import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from tokenizer import InputError


# ------------------------------------------------------------------------------------------------- optimisation
def linear_schedule(step, peak, train_steps, warmup_steps):
    """ELECTRA: linear decay to 0 over train_steps, times a linear warm-up, both from step 0 (so step 0 has lr 0)."""
    decay = max(0.0, 1.0 - step / train_steps)
    warmup = min(1.0, step / warmup_steps) if warmup_steps else 1.0
    return peak * decay * warmup


def step_seed(seed, step, micro_batch):
    """The random seed of one micro-batch of one step. Masking, sampling and dropout depend only on (seed, step,
    micro-batch), so a resumed run draws exactly what an uninterrupted one would, and N torchrun processes draw what
    one process accumulating over the same N micro-batches draws."""
    return (seed * 1_000_003 + step * 1_009 + micro_batch) % (2 ** 63)


class AdamWeightDecay(torch.optim.Optimizer):
    """ELECTRA's AdamWeightDecayOptimizer: Adam WITHOUT bias correction, weight decay added to the update.

    update = m / (sqrt(v) + eps) + weight_decay * param;  param -= lr * lr_scale * update
    `lr` is a tensor passed to step(), so that a changing learning rate never recompiles an XLA graph. `lr_scale` per
    parameter group is 1 in pre-training (fine-tuning uses it for layer-wise decay). The step is memory-bound (it
    streams parameter-sized tensors, 0.44 GB each at base size), so each group is updated in as few passes over memory
    as the device allows: on CPU and CUDA one call of torch's fused AdamW kernel (`fused_update`), on XLA, which has
    none, seven or eight passes of torch._foreach_* ops (`foreach_update`). Both compute the same numbers up to float
    rounding; the fused one took a `base` model's step from 360-520 ms to 55-58 ms here (`python bench.py finetune`
    times it).
    """

    def __init__(self, param_groups, betas=(0.9, 0.999), eps=1e-6):
        super().__init__(param_groups, dict(betas=betas, eps=eps, weight_decay=0.0, lr_scale=1.0))

    def init_state(self, params=None):
        """Adam's zero moments for `params` (default: every parameter) that have none yet. Pre-training makes them all
        before step 1 (on XLA the first step is then the same program as every later one: compiled once, not twice)."""
        for param in params if params is not None else (p for group in self.param_groups for p in group["params"]):
            if not self.state[param]:
                self.state[param]["exp_avg"] = torch.zeros_like(param)
                self.state[param]["exp_avg_sq"] = torch.zeros_like(param)

    def step(self, lr):
        with torch.no_grad():  # a context, not @torch.no_grad(): mutmut leaves decorated functions untested
            for group in self.param_groups:
                params = [param for param in group["params"] if param.grad is not None]
                if not params:
                    continue
                self.init_state(params)
                update = fused_update if params[0].device.type in ("cpu", "cuda") else foreach_update
                update(params, [param.grad for param in params], [self.state[param]["exp_avg"] for param in params],
                       [self.state[param]["exp_avg_sq"] for param in params], lr * group["lr_scale"], group["betas"],
                       group["eps"], group["weight_decay"])


def fused_update(params, grads, exp_avgs, exp_avg_sqs, step_size, betas, eps, weight_decay):
    """ELECTRA's update in one pass over memory: torch's fused AdamW kernel computes param -= step_size * weight_decay *
    param, m and v as Adam, then param -= step_size / c1 * m / (sqrt(v) / sqrt(c2) + eps), with Adam's bias corrections
    c = 1 - beta^step. Given step = inf, beta^inf = 0 and both corrections are exactly 1: ELECTRA's update, no bias
    correction, the decay applied before the update as in foreach_update."""
    no_bias_correction = torch.full((), float("inf"), device=params[0].device)  # filled there: no copy from the host
    torch._fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, [], [no_bias_correction] * len(params), lr=step_size,
                        beta1=betas[0], beta2=betas[1], weight_decay=weight_decay, eps=eps, amsgrad=False,
                        maximize=False)


def foreach_update(params, grads, exp_avgs, exp_avg_sqs, step_size, betas, eps, weight_decay):
    """ELECTRA's update in seven passes of torch._foreach_* ops over whole lists of tensors, eight with weight decay: a
    few dozen kernel calls per group, not a few per tensor. `step_size` is a 0-d tensor: the same XLA graph at every
    learning rate."""
    beta1, beta2 = betas
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)  # m = beta1 m + (1 - beta1) g = m + (1 - beta1)(g - m)
    torch._foreach_mul_(exp_avg_sqs, beta2)  # v = beta2 v + (1 - beta2) g^2
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
    denominators = torch._foreach_sqrt(exp_avg_sqs)  # the one temporary list: (sqrt(v) + eps) / step_size
    torch._foreach_add_(denominators, eps)
    torch._foreach_div_(denominators, step_size)
    if weight_decay:  # param -= step_size * weight_decay * param, before the update
        torch._foreach_mul_(params, 1 - step_size * weight_decay)
    torch._foreach_addcdiv_(params, exp_avgs, denominators, value=-1.0)  # param -= step_size m/(sqrt(v)+eps)


def parameter_groups(model, weight_decay):
    """Decay matrices and embeddings; not LayerNorm weights or biases (ELECTRA excludes 'LayerNorm' and 'bias').

    Shared tensors appear once (the generator and discriminator share the embeddings).
    """
    params = list({id(p): p for p in model.parameters() if p.requires_grad}.values())
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


# ------------------------------------------------------------------------------------------- devices and processes
@dataclass
class Runtime:
    """Where this process trains: its device, its rank among torchrun processes, and the XLA SPMD mesh if any."""
    device: torch.device
    rank: int = 0
    world_size: int = 1
    mesh: object = None  # torch_xla SPMD mesh when one program runs over several XLA devices

    @property
    def is_main(self):
        return self.rank == 0


def keep_freed_memory():
    """Linux/glibc: keep freed memory in the process rather than handing it back to the OS (elsewhere: nothing).

    A CPU step frees and re-allocates the same large activations every time. By default glibc returns them to the OS
    and the next step page-faults them back in, 4 KiB at a time (27,000-48,000 faults per Small step here). Now
    blocks up to 32 MiB (glibc's largest mmap threshold) come from the heap and the heap is never trimmed; peak memory
    stays the same."""
    if platform.libc_ver()[0] != "glibc":
        return
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    libc.mallopt(m_mmap_threshold, 32 * 2 ** 20)
    libc.mallopt(m_trim_threshold, 2 ** 31 - 1)  # the largest value a C int holds


def setup_runtime(device_name):
    """cpu/cuda: one process, or one per rank under torchrun (DDP). xla: one process driving every device with SPMD."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if device_name == "xla":
        if world_size > 1:
            raise InputError("--device xla runs one process over all devices (SPMD): start it without torchrun")
        chosen = os.environ.get("PJRT_DEVICE")
        import logging  # torch_xla picks TPU/NEURON/CPU when PJRT_DEVICE is unset; its bare CPU warning is said below

        quiet = lambda record: record.getMessage() != "Defaulting to PJRT_DEVICE=CPU"  # noqa: E731
        logging.getLogger().addFilter(quiet)
        try:
            import torch_xla  # imported only here: the project runs without torch_xla on cpu and cuda
            import torch_xla.runtime as xr
        finally:
            logging.getLogger().removeFilter(quiet)
        if chosen is None and os.environ.get("PJRT_DEVICE") == "CPU":
            print("--device xla: PJRT_DEVICE is not set and no TPU was found: using the XLA CPU device (slower than "
                  "--device cpu; set PJRT_DEVICE=TPU or CUDA to choose)")
        try:  # the runtime starts here: a PJRT_DEVICE with no such hardware behind it fails now
            count = xr.global_runtime_device_count()
        except (RuntimeError, OSError) as error:  # e.g. TPU: "libtpu not found"; CUDA: "No PjRtPlugin registered"
            reason = (str(error).strip().splitlines() or [type(error).__name__])[-1].split(". ")[0]
            raise InputError(f"--device xla: PJRT_DEVICE={os.environ.get('PJRT_DEVICE')} cannot be started here "
                             f"({reason})" + ("; unset it for the XLA CPU device" if chosen else "")) from None
        mesh = None
        if count > 1:  # e.g. the 8 cores of a TPU v3-8, or CPU_NUM_DEVICES=2
            import numpy as np
            import torch_xla.distributed.spmd as xs

            xr.use_spmd()  # must come before any XLA tensor exists
            mesh = xs.Mesh(np.arange(count), (count, 1), ("data", "model"))  # a 1-D data-parallel mesh
            print(f"SPMD over {count} XLA devices: one program, batch rows split over the 'data' mesh axis")
        return Runtime(torch_xla.device(), mesh=mesh)
    if device_name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is visible to torch")
    if device_name == "cpu":
        keep_freed_memory()
    if world_size == 1:
        return Runtime(torch.device(device_name))
    # torchrun: NCCL between GPUs, gloo between CPU processes
    torch.distributed.init_process_group("nccl" if device_name == "cuda" else "gloo")
    rank, local_rank = torch.distributed.get_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if device_name == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return Runtime(device, rank, world_size)


def sync(device):
    """XLA builds the step lazily: cut the graph here so that it compiles once and runs every step."""
    if device.type == "xla":
        import torch_xla

        torch_xla.sync()


def device_scalar(value, device):
    """`value` as a 0-d float32 tensor on `device`, sent from the host as data. torch_xla makes a 0-d host tensor that
    holds exactly 0 or 1 a constant of the graph instead: the first step's learning rate is 0 under warm-up, and a
    step with a constant in it is a program of its own, compiled once more. Sent as a 1-element vector, it is data."""
    return torch.tensor([value], dtype=torch.float32).to(device)[0]


def replicated(tensor, mesh):
    """`tensor`, marked replicated over the XLA SPMD `mesh` (None: no SPMD, nothing done): the sharding with which a
    step's outputs come back. A step whose inputs were made on the host or by a graph of their own then reads them as
    every later step reads the previous step's outputs: the same program, not one compiled again for step 2."""
    if mesh is not None:
        import torch_xla.distributed.spmd as xs

        xs.mark_sharding(tensor, mesh, (None,) * tensor.ndim)
    return tensor


def seed_everything(seed, device):
    """Seed the generator that masking, sampling and dropout draw from (XLA has a generator of its own)."""
    torch.manual_seed(seed)
    if device.type == "xla":
        import torch_xla.core.xla_model as xm

        xm.set_rng_state(seed)


def xla_count(device, metric):
    """How many times torch_xla recorded `metric` in this process (None off XLA): "CompileTime", the graphs compiled
    (none after step 1, README "Devices"); "TransferFromDeviceTime", the reads of device data on the host (each waits
    for the device to finish what it was given)."""
    if device.type != "xla":
        return None
    import torch_xla.debug.metrics as met

    return (met.metric_data(metric) or [0])[0]


def to_host(tensor):
    """A step's output on the CPU without compiling anything. Under XLA SPMD a batch-split tensor's .cpu() compiles a
    gather program every time it is called (measured: 2 graphs per log line for two tensors); its shards, read as
    they are and put together on the host by their indices, need none."""
    if tensor.device.type == "xla":
        import torch_xla.distributed.spmd as xs

        sharded = xs.wrap_if_sharded(tensor)
        if isinstance(sharded, xs.XLAShardedTensor):
            out = torch.empty(tensor.shape, dtype=tensor.dtype)
            for shard in sharded.local_shards:  # a replicated tensor's shards each hold all of it
                out[shard.indices if shard.indices is Ellipsis else tuple(shard.indices)] = shard.unpadded_data
            return out
    return tensor.detach().cpu()


def to_cpu(obj):
    """A copy of a (nested) state with every tensor on the CPU, so that checkpoints load anywhere."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def save_atomic(obj, path):
    """torch.save to a temporary name, fsync, rename, fsync the folder: a crash or a power loss never leaves a
    half-written checkpoint under the final name (without the fsyncs the renamed file can be empty after a power loss,
    as databases know: the rename may reach the disk before the data)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    try:
        with open(temporary, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as error:  # torch wraps a full disk, or a second Ctrl-C, in a RuntimeError of its own
        temporary.unlink(missing_ok=True)
        chain = [error, error.__cause__, error.__context__]
        if any(isinstance(link, KeyboardInterrupt) for link in chain):
            raise KeyboardInterrupt from None  # a second Ctrl-C while saving: stop at once (exit 130)
        cause = next((link for link in chain if isinstance(link, OSError)), None)
        if cause is not None:  # e.g. a full disk: train.main prints the path and why, in one line
            raise OSError(cause.errno, cause.strerror or str(cause), str(path)) from None
        raise
    os.replace(temporary, path)
    fsync_directory(path.parent)


def fsync_directory(directory):
    """Make a rename in `directory` durable (POSIX; Windows cannot open a folder and needs nothing)."""
    if os.name == "posix":
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_stale_temporaries(directory):
    """Delete the `*.tmp` files a killed run left behind (save_atomic's unfinished writes); says what it removed."""
    for stale in sorted(Path(directory).glob("*.tmp")) if Path(directory).is_dir() else []:
        stale.unlink()
        print(f"removed {stale}: an unfinished write of a run that was stopped")


def latest_checkpoint(directory):
    checkpoints = sorted(Path(directory).glob("step_*.pt"))
    return checkpoints[-1] if checkpoints else None


def load_checkpoint(path, required=("model", "step")):
    """A checkpoint written by save_atomic -> its state dict; InputError (one line) for anything else."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {'is a folder, not a' if path.is_dir() else 'no such'} checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises many kinds (RuntimeError, EOFError, UnpicklingError, zipfile errors)
        reason = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        raise InputError(f"{path}: not a readable checkpoint ({reason})") from None
    missing = [key for key in required if not isinstance(state, dict) or key not in state]
    if missing:
        raise InputError(f"{path}: not a checkpoint of this project (no {', '.join(missing)})")
    # damage inside the zip's stored tensors goes unnoticed by torch.load; a NaN is never saved (the loops check)
    if isinstance(state["model"], dict) and not all(torch.isfinite(tensor).all() for tensor in state["model"].values()
                                                    if torch.is_tensor(tensor) and tensor.is_floating_point()):
        raise InputError(f"{path}: damaged (weights that are not finite numbers)")
    return state


def latest_valid_checkpoint(directory, required=("model", "step")):
    """(path, state) of the newest checkpoint in `directory` that loads, or (None, None). A damaged newer one (cut
    short by a crash on a file system without fsync, zero-filled after a power loss) is reported and skipped."""
    for path in sorted(Path(directory).glob("step_*.pt"), reverse=True):
        try:
            return path, load_checkpoint(path, required)
        except InputError as error:  # renamed, so that it never counts as the newest checkpoint again
            aside = set_aside(path)
            print(f"warning: skipping {error}; renamed it to {aside.name}; trying an older checkpoint")
    return None, None


def set_aside(path):
    """Rename a damaged `path` to path.damaged, or .damaged.2, .3, ... when an earlier damaged copy of the same step
    is kept there (a run that crashed twice at the same step): the evidence of each crash is kept."""
    number, aside = 1, path.with_name(path.name + ".damaged")
    while aside.exists():
        number += 1
        aside = path.with_name(f"{path.name}.damaged.{number}")
    try:
        path.rename(aside)
    except OSError:  # another torchrun process renamed it first
        pass
    return aside


@contextmanager
def run_folder_lock(folder):
    """One run at a time in a run folder: an advisory lock on the folder itself (a second run into it, started while
    the first one still builds its vocabulary, would mix its log and checkpoints with the first one's). The kernel
    frees it when the process ends, a kill included; a folder made here and left empty is removed again."""
    folder = Path(folder)
    made = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"{folder}: another run is writing into it now; wait for it to end, or pass another "
                             "--out") from None
        except OSError:  # a file system without locks (some network mounts): the run goes on unguarded
            pass
        yield
    finally:
        os.close(descriptor)
        if made and not any(folder.iterdir()):  # e.g. the inputs did not check out: nothing was written
            folder.rmdir()


class StopOnSignal:
    """Turn SIGINT (Ctrl-C) and SIGTERM (preemptible VMs, cluster schedulers) into a request to stop cleanly.

        with StopOnSignal() as stop:
            for batch in batches:
                ...one whole training step...
                if stop.requested:
                    save a checkpoint; print(f"stopped at step {step}; `--resume` continues")
                    return stop.exit_code          # 130 for SIGINT, 143 for SIGTERM
    The first signal only sets `requested` (the signal number); the loop finishes its step, saves and exits. The
    handlers then go back to the defaults, so a second Ctrl-C stops the process at once, even inside backward().
    Outside the main thread (where Python cannot install handlers) it does nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested, self._previous, self._depth = 0, {}, 0

    @property
    def exit_code(self):
        return 128 + self.requested  # the shell's convention: 130 = SIGINT, 143 = SIGTERM

    def _handle(self, signum, frame):
        self.requested = signum
        for number in self.SIGNALS:
            signal.signal(number, signal.SIG_DFL)
        again = "Ctrl-C again" if signum == signal.SIGINT else "another SIGTERM, or a Ctrl-C,"
        print(f"\n{signal.Signals(signum).name}: stopping after this step and saving a checkpoint ({again} stops "
              "at once, without saving)", file=sys.stderr, flush=True)

    def __enter__(self):
        # re-entrant: a loop's until_requested inside a `with stop:` around the whole run keeps the outer handlers (and,
        # after a first signal, the defaults that make a second one stop at once)
        self._depth += 1
        if self._depth == 1 and threading.current_thread() is threading.main_thread():
            self._previous = {number: signal.signal(number, self._handle) for number in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth == 0:
            for number, handler in self._previous.items():
                signal.signal(number, handler)
            self._previous = {}
        return False

    def until_requested(self, iterable, agree=None):
        """Yield from `iterable` with the handlers installed; stop yielding once a stop is requested after an item was
        used (i.e. after a whole step). `agree(requested) -> requested` lets torchrun processes stop at the same step
        (e.g. an all-reduce MAX); the loop's code after `for` then saves when `stop.requested`:

            stop = StopOnSignal()
            for batch in stop.until_requested(batches):
                ...one whole training step...
            if stop.requested:
                save a checkpoint; print(f"stopped at step {step}; `--resume` continues"); return stop.exit_code
        """
        with self:
            for item in iterable:
                yield item
                if agree is not None:
                    self.requested = agree(self.requested)
                if self.requested:
                    return


# ------------------------------------------------------------------------------------------------------------ logs
def _logged_step(line):
    """The step of one metrics.jsonl line; a line cut short by a kill counts as unseen (dropped on resume)."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")


class MetricsLog:
    """Training curves: each record (a dict with "step") is one JSON line of out_dir/metrics.jsonl and, when the
    `tensorboard` package is installed (pip install -e ".[tensorboard]"), its numbers are also TensorBoard scalars in
    event files beside it (`tensorboard --logdir runs`). Opened at `step` (a resumed run), it first drops every
    record after that step from both, so the curves read as one uninterrupted run."""

    def __init__(self, out_dir, step=0):
        self.path = Path(out_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            kept = [line for line in self.path.read_text().splitlines() if _logged_step(line) <= step]
            self.path.write_text("".join(line + "\n" for line in kept))
        try:
            from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package: optional
        except ImportError:
            self.writer = None
        else:  # purge_step: TensorBoard hides the events of earlier runs from this step on
            self.writer = SummaryWriter(str(out_dir), purge_step=step + 1)

    def write(self, record):
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for name, value in record.items():
                if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(name, value, record["step"])
            self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()

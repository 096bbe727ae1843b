"""What both training loops share (pre-training in train.py, fine-tuning in tasks.py): ELECTRA's optimizer and
learning-rate schedule, the device a run trains on (cpu, cuda with torchrun, xla with SPMD), and checkpoint files.

References: google-research/electra model/optimization.py (AdamWeightDecayOptimizer, the polynomial-decay schedule with
its warm-up); torch_xla's SPMD and PJRT runtime for --device xla.
"""
import ctypes
import os
import platform
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

class AdamWeightDecay(torch.optim.Optimizer):
    """ELECTRA's AdamWeightDecayOptimizer: Adam WITHOUT bias correction, weight decay added to the update.

    update = m / (sqrt(v) + eps) + weight_decay * param;  param -= lr * lr_scale * update
    `lr` is a tensor passed to step(), so that a changing learning rate never recompiles an XLA graph. `lr_scale` per
    parameter group is 1 in pre-training (fine-tuning uses it for layer-wise decay).
    """

    def __init__(self, param_groups, betas=(0.9, 0.999), eps=1e-6):
        super().__init__(param_groups, dict(betas=betas, eps=eps, weight_decay=0.0, lr_scale=1.0))

    @torch.no_grad()
    def step(self, lr):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["exp_avg"] = torch.zeros_like(param)
                    state["exp_avg_sq"] = torch.zeros_like(param)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(param.grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(param.grad, param.grad, value=1 - beta2)
                update = exp_avg / (exp_avg_sq.sqrt() + group["eps"])
                if group["weight_decay"]:
                    update.add_(param, alpha=group["weight_decay"])
                param.sub_(update * (lr * group["lr_scale"]))


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
        import torch_xla  # imported only here: the project runs without torch_xla on cpu and cuda
        import torch_xla.runtime as xr

        mesh = None
        if xr.global_runtime_device_count() > 1:  # e.g. the 8 cores of a TPU v3-8, or CPU_NUM_DEVICES=2
            import numpy as np
            import torch_xla.distributed.spmd as xs

            xr.use_spmd()  # must come before any XLA tensor exists
            count = xr.global_runtime_device_count()
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


def seed_everything(seed, device):
    """Seed the generator that masking, sampling and dropout draw from (XLA has a generator of its own)."""
    torch.manual_seed(seed)
    if device.type == "xla":
        import torch_xla.core.xla_model as xm

        xm.set_rng_state(seed)


def xla_compiles(device):
    """How many XLA graphs were compiled so far: it must stop growing after the first two steps."""
    if device.type != "xla":
        return None
    import torch_xla.debug.metrics as met

    return (met.metric_data("CompileTime") or [0])[0]


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
    """torch.save to a temporary name, then rename: a crash never leaves a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    torch.save(obj, temporary)
    os.replace(temporary, path)


def latest_checkpoint(directory):
    checkpoints = sorted(Path(directory).glob("step_*.pt"))
    return checkpoints[-1] if checkpoints else None

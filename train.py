"""The command line: build data, pre-train ELECTRAMed, export it.

    python train.py pretrain --corpus PUBMED_DIR --device xla      # the main job: vocab + shards + pre-training
    python train.py prepare --corpus PUBMED_DIR --vocab vocab.txt --out shards/
    python train.py vocab --corpus PUBMED_DIR --out vocab.txt
    python train.py export --checkpoint runs/pretrain/checkpoints/step_0001000.pt --out electramed-hf/

Pre-training follows ELECTRA (Clark et al. 2020; google-research/electra run_pretraining.py and
model/optimization.py) with the ELECTRAMed hyper-parameters (Miolo et al. 2021, Table 1) as the `base` defaults:
Adam without bias correction, decoupled weight decay 0.01 (not on LayerNorm or biases), global-norm clipping 1.0,
learning rate = peak x linear decay to 0 x warm-up ramp, applied together from step 0.
"""
import argparse
import json
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

import data
from electramed import ElectraForPretraining, load_pretrained, preset, save_pretrained
from runtime import (AdamWeightDecay, keep_freed_memory, latest_checkpoint, linear_schedule, parameter_groups,
                     save_atomic, seed_everything, setup_runtime, sync, to_cpu, xla_compiles)
from tokenizer import InputError, WordPieceTokenizer, train_vocab, write_vocab

PUBMED_HELP = """no pre-training text: pass --corpus with files or folders of PubMed text, e.g.
  python train.py pretrain --corpus ~/pubmed/pubmed_abstracts.txt
Formats: one sentence per line with a blank line between abstracts (the BlueBERT corpus the paper used:
https://github.com/ncbi-nlp/BlueBERT, 'PubMed abstracts'), PubTator, PubMedQA JSON, or token-per-line files.
PubMed itself: the annual baseline at https://ftp.ncbi.nlm.nih.gov/pubmed/baseline/ (XML; extract title + abstract).
Or pass --shards with a folder built by 'python train.py prepare'."""


# ----------------------------------------------------------------------------------------------- pre-training settings
@dataclass
class PretrainConfig:
    """Optimisation settings. The defaults per preset are ELECTRA's (small, large) and ELECTRAMed's Table 1 (base)."""
    learning_rate: float
    batch_size: int  # sequences per optimizer step (all accumulation steps and all ranks together)
    max_length: int
    train_steps: int
    warmup_steps: int = 10_000
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-6
    clip_norm: float = 1.0
    mask_prob: float = 0.15
    accumulation_steps: int = 1
    seed: int = 12345


PRETRAIN_PRESETS = {
    "tiny": PretrainConfig(learning_rate=1e-3, batch_size=16, max_length=64, train_steps=200, warmup_steps=20),
    "small": PretrainConfig(learning_rate=5e-4, batch_size=128, max_length=128, train_steps=1_000_000),
    "base": PretrainConfig(learning_rate=2e-4, batch_size=256, max_length=512, train_steps=1_000_000),  # Table 1
    "large": PretrainConfig(learning_rate=2e-4, batch_size=2048, max_length=512, train_steps=400_000, mask_prob=0.25),
}


def learning_rate_at(step, config: PretrainConfig):
    return linear_schedule(step, config.learning_rate, config.train_steps, config.warmup_steps)


# ------------------------------------------------------------------------------------------------ vocabulary + shards
def build_vocab(corpus, out_path, vocab_size):
    """Train a WordPiece vocabulary on the corpus sentences (the paper's future work: a vocabulary of its own corpus)."""
    sentences = (s for path in data.corpus_files(corpus) for doc in data.read_documents(path) for s in doc)
    tokens = train_vocab(tqdm(sentences, desc="vocab: reading sentences", unit=" sent"), vocab_size)
    write_vocab(tokens, out_path)
    return out_path


def prepare_inputs(args, max_length):
    """Resolve the vocabulary and the shards of a pre-training run, building whichever is missing."""
    out = Path(args.out)
    vocab = Path(args.vocab) if args.vocab else out / "vocab.txt"
    shards = Path(args.shards) if args.shards else out / "shards"
    if not vocab.exists():
        if args.vocab:
            raise InputError(f"{vocab}: no such vocabulary file")
        if not args.corpus:
            raise InputError(PUBMED_HELP)
        print(f"no --vocab given: training a {args.vocab_size}-token WordPiece vocabulary on the corpus -> {vocab}")
        build_vocab(args.corpus, vocab, args.vocab_size)
    if not data.shards_ready(shards, vocab, max_length):
        if not args.corpus:
            raise InputError(PUBMED_HELP if not shards.exists() else
                             f"{shards}: not a complete build for {vocab} at max length {max_length}; pass --corpus")
        data.build_shards(args.corpus, vocab, shards, max_length, processes=args.processes,
                          preprocess=args.pubmed_preprocess)
    return vocab, shards


# ------------------------------------------------------------------------------------------------------- pre-training
def resolve_config(args):
    """Preset defaults, then every flag the user gave."""
    config = PRETRAIN_PRESETS[args.preset]
    overrides = {k: getattr(args, k) for k in asdict(config) if getattr(args, k, None) is not None}
    config = PretrainConfig(**{**asdict(config), **overrides})
    if config.batch_size % (config.accumulation_steps * args.world_size):
        raise InputError(f"--batch-size {config.batch_size} is not divisible by --accumulation-steps "
                         f"{config.accumulation_steps} x {args.world_size} processes")
    return config


def model_config(args, config, tokenizer):
    overrides = dict(vocab_size=len(tokenizer.ids), pad_id=tokenizer.pad_id, mask_id=tokenizer.mask_id,
                     cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id, mask_prob=config.mask_prob,
                     max_position_embeddings=max(512, config.max_length), objective=args.objective)
    for flag in ("gen_weight", "disc_weight", "disc_prior_bias"):
        if getattr(args, flag) is not None:
            overrides[flag] = getattr(args, flag)
    model = preset(args.preset, **overrides)
    if args.generator_size is not None:  # ELECTRA: generator hidden = fraction x hidden, 64-wide heads, FFN 4x
        hidden = max(64, round(args.generator_size * model.hidden_size / 64) * 64)
        model.generator_hidden_size, model.generator_num_heads = hidden, max(1, hidden // 64)
        model.generator_intermediate_size = 4 * hidden
    return model


def step_seed(seed, step, micro_batch):
    """The random seed of one micro-batch of one step. Masking, sampling and dropout depend only on (seed, step,
    micro-batch), so a resumed run draws exactly what an uninterrupted one would, and N torchrun processes draw what
    one process accumulating over the same N micro-batches draws."""
    return (seed * 1_000_003 + step * 1_009 + micro_batch) % (2 ** 63)


def global_batches(loader, config, start_step, runtime):
    """This process's share of every optimizer step's batch, from `start_step` on: {name: [rows, max_length]}."""
    per_epoch = loader.batches_per_epoch(config.batch_size)
    for step in range(start_step, config.train_steps):
        epoch, number = divmod(step, per_epoch)
        yield loader.batch(epoch, number, config.batch_size, config.seed, runtime.rank, runtime.world_size)


def pretrain(args):
    runtime = setup_runtime(args.device)
    args.world_size = runtime.world_size
    config = resolve_config(args)
    if runtime.is_main:
        vocab, shards = prepare_inputs(args, config.max_length)
    if runtime.world_size > 1:  # the other ranks wait for rank 0 to build the vocabulary and shards
        torch.distributed.barrier()
        vocab, shards = prepare_inputs(args, config.max_length)
    tokenizer = WordPieceTokenizer(vocab)
    device = runtime.device
    out = Path(args.out)
    checkpoints = out / "checkpoints"
    loader = data.PretrainingData(shards, tokenizer.pad_id, tokenizer.sep_id)
    if loader.batches_per_epoch(config.batch_size) == 0:
        raise InputError(f"{shards}: {len(loader)} examples, fewer than one batch of {config.batch_size}")

    seed_everything(config.seed, device)
    model = ElectraForPretraining(model_config(args, config, tokenizer)).to(device)
    optimizer = AdamWeightDecay(parameter_groups(model, config.weight_decay),
                                betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_epsilon)
    step = 0
    resume_from = latest_checkpoint(checkpoints) if args.resume else None
    if resume_from:
        state = torch.load(resume_from, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        print(f"resumed from {resume_from} at step {step}")
        changed = {k: (v, getattr(config, k)) for k, v in state["pretrain"].items() if getattr(config, k) != v}
        if changed:  # allowed (e.g. more --train-steps), but then the run is no longer the one that was stopped
            print("note: settings differ from the checkpoint's: " +
                  ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items()))
    log_path = out / "metrics.jsonl"
    if runtime.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({"pretrain": asdict(config), "model": asdict(model.config),
                                                     "vocab": str(vocab), "shards": str(shards)}, indent=1))
        if log_path.exists():  # keep only what the resumed state has seen: the log reads as one uninterrupted run
            kept = [line for line in log_path.read_text().splitlines() if json.loads(line)["step"] <= step]
            log_path.write_text("".join(line + "\n" for line in kept))

    def save_checkpoint(step):
        if runtime.is_main:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                     "pretrain": asdict(config), "model_config": asdict(model.config)}
            save_atomic(to_cpu(state), checkpoints / f"step_{step:07d}.pt")
            for old in sorted(checkpoints.glob("step_*.pt"))[:-args.keep_checkpoints]:
                old.unlink()

    step_model = torch.compile(model) if args.compile else model
    if runtime.world_size > 1:
        step_model = torch.nn.parallel.DistributedDataParallel(step_model)
    batches = global_batches(loader, config, step, runtime)
    if device.type == "xla":  # prefetch to the device on a background thread; under SPMD split rows over the mesh
        import torch_xla.distributed.parallel_loader as pl
        import torch_xla.distributed.spmd as xs

        sharding = xs.ShardingSpec(runtime.mesh, ("data", None)) if runtime.mesh else None
        batches = pl.MpDeviceLoader(batches, device, input_sharding=sharding)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and args.bf16)
    accumulation = config.accumulation_steps
    model.train()
    finite = torch.ones((), dtype=torch.bool, device=device)  # checked on the host only when logging or saving
    sums, count, tokens, last_time = {}, 0, 0, time.perf_counter()
    bar = tqdm(total=config.train_steps, initial=step, desc="pretrain", unit="step", dynamic_ncols=True,
               disable=not runtime.is_main)
    for batch in batches:
        lr = torch.tensor(learning_rate_at(step, config), device=device)
        for micro in range(accumulation):  # gradient accumulation: batch 256 on a small machine
            if device.type != "xla":  # XLA's generator advances inside the compiled step instead
                torch.manual_seed(step_seed(config.seed, step, runtime.rank * accumulation + micro))
            micro_batch = {k: v.chunk(accumulation)[micro].to(device) for k, v in batch.items()}
            last = micro == accumulation - 1
            with autocast, (step_model.no_sync() if runtime.world_size > 1 and not last else nullcontext()):
                outputs = step_model(**micro_batch)
                (outputs["loss"] / accumulation).backward()
            for name, value in outputs.items():
                sums[name] = sums.get(name, 0) + value.detach().float()
            finite &= torch.isfinite(outputs["loss"].detach())
        count += accumulation
        tokens += batch["input_ids"].numel() * runtime.world_size
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
        optimizer.step(lr)
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        step += 1
        bar.update(1)
        if step % args.log_every == 0 or step == config.train_steps:
            check_finite(finite, step, checkpoints, runtime)
            names = sorted(sums)
            values = torch.stack([sums[k] for k in names]) / count
            if runtime.world_size > 1:  # log the average over all processes
                torch.distributed.all_reduce(values)
                values /= runtime.world_size
            now = time.perf_counter()
            record = {"step": step, "lr": learning_rate_at(step - 1, config),
                      **{k: round(v, 6) for k, v in zip(names, values.tolist())},
                      "tokens_per_s": round(tokens / (now - last_time), 1)}
            if device.type == "xla":
                record["xla_compiles"] = xla_compiles(device)
            if runtime.is_main:
                with open(log_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{record['loss']:.3f}", gen_acc=f"{record.get('gen_accuracy', 0):.3f}",
                            disc_acc=f"{record.get('disc_accuracy', 0):.3f}", tok_s=f"{record['tokens_per_s']:.0f}")
            sums, count, tokens, last_time = {}, 0, 0, now
        if step % args.save_every == 0 or step == config.train_steps:
            check_finite(finite, step, checkpoints, runtime)
            save_checkpoint(step)
    bar.close()
    if runtime.is_main:
        export_dir = out / "electramed-hf"
        save_pretrained(model.cpu(), export_dir, vocab_path=vocab)
        print(f"done: {step} steps; checkpoints in {checkpoints}; HuggingFace-format model in {export_dir}")
    if runtime.world_size > 1:
        torch.distributed.destroy_process_group()


def check_finite(finite, step, checkpoints, runtime):
    """Stop on a NaN/inf loss before anything is saved: the last good checkpoint stays the newest one."""
    if runtime.world_size > 1:
        finite = finite.clone().float()
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
    if not bool(finite):
        raise SystemExit(f"error: the loss became NaN or infinite before step {step}; stopping without saving. The "
                         f"last good checkpoint is {latest_checkpoint(checkpoints) or 'none'} (try a lower "
                         "--learning-rate or more --warmup-steps)")


# ------------------------------------------------------------------------------------------------ other subcommands
def prepare(args):
    if not args.corpus:
        raise InputError("prepare needs --corpus: the text files or folders to pack")
    index = data.build_shards(args.corpus, args.vocab, args.out, args.max_length, seed=args.seed,
                              preprocess=args.pubmed_preprocess, processes=args.processes)
    print(f"{index['examples']} examples of length {index['max_length']} in {len(index['shards'])} shards -> {args.out}")


def vocab(args):
    build_vocab(args.corpus, args.out, args.vocab_size)
    print(f"wrote {args.vocab_size} tokens -> {args.out}")


def export(args):
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    from electramed import ElectraConfig

    model = ElectraForPretraining(ElectraConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    save_pretrained(model, args.out, vocab_path=args.vocab)
    load_pretrained(args.out)  # read it back: an export that cannot be loaded is not an export
    print(f"exported step {state['step']} -> {args.out}")


# -------------------------------------------------------------------------------------------------------------- CLI
def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    number = dict(default=None)

    def add_corpus_flags(p, vocab_required):
        p.add_argument("--corpus", nargs="+", help="PubMed text: files or folders (plain text with one sentence per "
                       "line and blank lines between documents, PubTator, PubMedQA JSON, token-per-line)")
        p.add_argument("--vocab", required=vocab_required, help="WordPiece vocab.txt" +
                       ("" if vocab_required else " (default: train one on --corpus, saved as OUT/vocab.txt)"))
        p.add_argument("--pubmed-preprocess", action="store_true", help="apply the paper's PubMed pre-processing "
                       "(lowercase, drop non-ASCII, Treebank word split) before WordPiece")
        p.add_argument("--processes", type=int, default=2, help="processes for building shards (default 2)")

    p = commands.add_parser("pretrain", help="pre-train ELECTRAMed (builds the vocabulary and shards if needed)",
                            description="Pre-train the generator and discriminator jointly (replaced token "
                            "detection). Hyper-parameter flags default to the --preset's values: base = the "
                            "paper's Table 1.")
    add_corpus_flags(p, vocab_required=False)
    p.add_argument("--shards", help="folder of shards built by 'prepare' (default OUT/shards, built if missing)")
    p.add_argument("--vocab-size", type=int, default=31090, help="size of a vocabulary trained on --corpus "
                   "(default 31,090, SciVocab's size)")
    p.add_argument("--out", default="runs/pretrain", help="run folder: checkpoints/, metrics.jsonl, electramed-hf/")
    p.add_argument("--preset", choices=PRETRAIN_PRESETS, default="base", help="model size and its defaults: base "
                   "(paper), small (ELECTRA-Small), large, tiny (tests)")
    p.add_argument("--objective", choices=["electra", "mlm"], default="electra", help="electra: replaced token "
                   "detection; mlm: BERT-style masked LM on the discriminator-sized encoder (for comparison)")
    p.add_argument("--device", choices=["cpu", "cuda", "xla"], default="cpu", help="where to train (default cpu)")
    p.add_argument("--learning-rate", type=float, **number, help="peak learning rate (base 2e-4, small 5e-4)")
    p.add_argument("--batch-size", type=int, **number, help="sequences per optimizer step (base 256, small 128)")
    p.add_argument("--accumulation-steps", type=int, **number, help="split each batch into this many "
                   "forward/backward passes (same result, less memory; default 1)")
    p.add_argument("--max-length", type=int, **number, help="tokens per sequence (base 512, small 128)")
    p.add_argument("--train-steps", type=int, **number, help="optimizer steps; the learning rate decays to 0 at the "
                   "last one (base/small 1,000,000)")
    p.add_argument("--warmup-steps", type=int, **number, help="linear warm-up steps (default 10,000)")
    p.add_argument("--weight-decay", type=float, **number, help="decoupled weight decay, not on LayerNorm or biases "
                   "(default 0.01)")
    p.add_argument("--adam-beta1", type=float, **number, help="Adam beta1 (default 0.9)")
    p.add_argument("--adam-beta2", type=float, **number, help="Adam beta2 (default 0.999)")
    p.add_argument("--adam-epsilon", type=float, **number, help="Adam epsilon (default 1e-6)")
    p.add_argument("--clip-norm", type=float, **number, help="global gradient-norm clip (default 1.0)")
    p.add_argument("--mask-prob", type=float, **number, help="share of tokens masked (default 0.15; large 0.25)")
    p.add_argument("--generator-size", type=float, default=None, help="generator hidden size as a fraction of the "
                   "discriminator's (default: the preset's, base 1/3, small 1/4)")
    p.add_argument("--gen-weight", type=float, default=None, help="weight of the generator MLM loss (default 1)")
    p.add_argument("--disc-weight", type=float, default=None, help="weight of the discriminator loss (default 50)")
    p.add_argument("--disc-prior-bias", action=argparse.BooleanOptionalAction, default=None,
                   help="start the discriminator's output bias at the log-odds of --mask-prob (default on; ours, "
                   "not ELECTRA's: without it a short-warm-up run collapses to predicting the base rate; "
                   "--no-disc-prior-bias gives the official zero initialisation)")
    p.add_argument("--seed", type=int, **number, help="seed for initialisation, masking and data order")
    p.add_argument("--log-every", type=int, default=100, help="pull metrics to the host and log every N steps")
    p.add_argument("--save-every", type=int, default=1000, help="write a checkpoint every N steps")
    p.add_argument("--keep-checkpoints", dest="keep_checkpoints", type=int, default=3, help="checkpoints to keep")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in OUT/checkpoints")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True, help="bf16 autocast on CUDA")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    p.set_defaults(run=pretrain)

    p = commands.add_parser("prepare", help="tokenize and pack a corpus into pre-training shards")
    add_corpus_flags(p, vocab_required=True)
    p.add_argument("--out", required=True, help="shard folder")
    p.add_argument("--max-length", type=int, default=512, help="tokens per example (default 512, the paper's)")
    p.add_argument("--seed", type=int, default=12345, help="seed for ELECTRA's random segment and length choices")
    p.set_defaults(run=prepare)

    p = commands.add_parser("vocab", help="train a WordPiece vocabulary on a corpus")
    p.add_argument("--corpus", nargs="+", required=True, help="text files or folders (formats as for pretrain)")
    p.add_argument("--out", required=True, help="vocab.txt to write")
    p.add_argument("--vocab-size", type=int, default=31090, help="number of tokens (default 31,090)")
    p.set_defaults(run=vocab)

    p = commands.add_parser("export", help="write a checkpoint as HuggingFace ELECTRA directories")
    p.add_argument("--checkpoint", required=True, help="a step_*.pt file from a pre-training run")
    p.add_argument("--out", required=True, help="folder for discriminator/ and generator/")
    p.add_argument("--vocab", help="vocab.txt to copy beside the weights")
    p.set_defaults(run=export)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The command line: build data, pre-train ELECTRAMed, export it, fine-tune and evaluate it.

    python train.py pretrain --corpus PUBMED_DIR --device xla      # the main job: vocab + shards + pre-training
    python train.py prepare --corpus PUBMED_DIR --vocab vocab.txt --out shards/
    python train.py vocab --corpus PUBMED_DIR --out vocab.txt
    python train.py export --checkpoint runs/pretrain/checkpoints/step_0001000.pt --out electramed-hf/
    python train.py corpus --pubmed pubmed25n0001.xml.gz ... --out pubmed.txt   # PubMed XML -> the paper's corpus
    python train.py finetune --task ner --data NCBI_DIR --init runs/pretrain/electramed-hf --out runs/ncbi --seeds 3
    python train.py evaluate --model runs/ncbi/seed_0/best --data NCBI_DIR/test.txt
    echo "Mutations in BRCA1 cause breast cancer ." | python train.py predict --model runs/ncbi/seed_0/best
    python train.py reproduce --init runs/pretrain/electramed-hf --out runs/tables   # the paper's Tables 7-9

Pre-training follows ELECTRA (Clark et al. 2020; google-research/electra run_pretraining.py and
model/optimization.py) with the ELECTRAMed hyper-parameters (Miolo et al. 2021, Table 1) as the `base` defaults:
Adam without bias correction, decoupled weight decay 0.01 (not on LayerNorm or biases), global-norm clipping 1.0,
learning rate = peak x linear decay to 0 x warm-up ramp, applied together from step 0. Fine-tuning (tasks.py) takes
the paper's Table 5 settings for its task (NER/RE: lr 5e-5, batch 32, length 128, layer-wise decay 0.8; SQuAD and
BioASQ their own columns) and the official code's epochs and warm-up share.
"""
import argparse
import json
import math
import os
import signal
import sys
import time

if __name__ == "__main__":  # Ctrl-C while torch loads (seconds) ends the process quietly, not with an import traceback
    signal.signal(signal.SIGINT, signal.SIG_DFL)
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

import data
import inference
import pubmed
import qa
import reproduce
import tasks
from electramed import ElectraForPretraining, load_pretrained, preset, roc_auc, save_pretrained
from runtime import (AdamWeightDecay, MetricsLog, StopOnSignal, device_scalar, latest_checkpoint,
                     latest_valid_checkpoint, linear_schedule, load_checkpoint, parameter_groups,
                     remove_stale_temporaries, replicated, run_folder_lock, save_atomic, seed_everything, setup_runtime,
                     step_seed, sync, to_cpu, to_host, xla_count)
from tokenizer import SPECIAL_TOKENS, InputError, WordPieceTokenizer, read_vocab, train_vocab, write_vocab

if __name__ == "__main__":  # from here on Ctrl-C is Python's KeyboardInterrupt again (main and StopOnSignal handle it)
    signal.signal(signal.SIGINT, signal.default_int_handler)

PUBMED_HELP = """no pre-training text: pass --corpus with files or folders of PubMed text, e.g.
  python train.py pretrain --corpus pubmed.txt
Formats: one sentence per line with a blank line between abstracts (the BlueBERT corpus the paper used:
https://github.com/ncbi-nlp/BlueBERT, 'PubMed abstracts'), PubTator, PubMedQA JSON, or token-per-line files.
PubMed itself: 'python train.py corpus --pubmed FILES_OR_URLS --out pubmed.txt' turns the annual baseline
(https://ftp.ncbi.nlm.nih.gov/pubmed/baseline/) into that layout.
Or pass --shards with a folder built by 'python train.py prepare'."""
# The one piece of data in the repository: 500 real PubMed titles + abstracts (BC5CDR's training set, NCBI public
# domain; samples/pubmed/README.md), so that `pretrain` runs out of the box. Real work passes --corpus.
SAMPLE_CORPUS = Path(__file__).resolve().parent / "samples" / "pubmed" / "bc5cdr-training-abstracts.txt"


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
    files = data.corpus_files(corpus)
    sentences = (s for path in files for doc in data.read_documents(path) for s in doc)
    try:
        tokens = train_vocab(tqdm(sentences, desc="vocab: reading sentences", unit=" sent"), vocab_size)
    except InputError as error:  # --vocab-size below the alphabet: name the corpus too (a bad line names its file)
        if str(error).startswith(tuple(map(str, files))):
            raise
        raise InputError(f"{', '.join(map(str, corpus))}: {error}") from None
    if len(tokens) <= len(SPECIAL_TOKENS):
        raise InputError(f"{', '.join(map(str, corpus))}: no words to build a vocabulary from")
    write_vocab(tokens, out_path)  # atomic: a vocab.txt that exists is complete
    # the record that a finished run wrote it, and from what: a later run reuses OUT/vocab.txt only if it matches
    data.write_json_atomic(vocab_record(out_path), {"sha1": data.file_digest(out_path), "vocab_size": vocab_size,
                                                    "tokens": len(tokens), "sources": data.source_files(files)})
    return len(tokens)  # fewer than vocab_size when the corpus runs out of pairs to merge


def vocab_record(vocab):
    return Path(vocab).with_suffix(".json")  # vocab.txt -> vocab.json beside it


def vocab_problem(vocab, corpus, vocab_size):
    """Why a vocab.txt left in a run folder must not be reused (None: reuse it)."""
    record = data.read_json_or_none(vocab_record(vocab))
    if not isinstance(record, dict):
        return f"no record ({vocab_record(vocab).name}) that a finished run wrote it (left by a stopped run?)"
    if record.get("sha1") != data.file_digest(vocab):
        return f"changed since its record ({vocab_record(vocab).name}) was written"
    if corpus and (record.get("vocab_size"), record.get("sources")) != (vocab_size,
                                                                         data.source_files(data.corpus_files(corpus))):
        return "trained on other corpus files or with another --vocab-size"
    return None


def prepare_inputs(args, max_length):
    """Resolve the vocabulary and the shards of a pre-training run, building whichever is missing."""
    out = Path(args.out)
    vocab = Path(args.vocab) if args.vocab else out / "vocab.txt"
    shards = Path(args.shards) if args.shards else out / "shards"
    if args.shards and not shards.is_dir():
        raise InputError(f"{shards}: " + ("a file, not a folder" if shards.exists() else "no such folder") +
                         " (--shards names a folder that `train.py prepare` built; without it, --corpus builds them)")
    if args.shards and not args.vocab and not vocab.exists():
        raise InputError(f"--shards {shards}: pass --vocab too, the vocabulary the shards were built with")
    if not args.corpus and not args.shards and not (shards / "index.json").exists():  # not when resuming OUT
        args.corpus = [str(SAMPLE_CORPUS)]
        print(f"no --corpus: using the bundled sample of 500 PubMed abstracts ({SAMPLE_CORPUS.name}, 0.7 MB) to try "
              "the pipeline; pass --corpus with real PubMed text for real work")
    if args.vocab:
        read_vocab(vocab)  # one line for a folder, a missing file, bad bytes, entries with spaces
    elif vocab.exists() and (problem := vocab_problem(vocab, args.corpus, args.vocab_size)):
        if latest_checkpoint(out / "checkpoints"):  # those were trained with it: never replace it under them
            advice = ("put back the one they were trained with" if problem.startswith("changed") else
                      f"pass --vocab {vocab} to use it as it is" if problem.startswith("no record") else
                      "pass their corpus and --vocab-size")
            raise InputError(f"{vocab}: {problem}, and the checkpoints in {out / 'checkpoints'} were trained with "
                             f"it; {advice}, or another --out")
        if not args.corpus:
            raise InputError(f"{vocab}: {problem}; pass --corpus to train it again")
        print(f"{vocab}: {problem}: training it again")
        vocab.unlink()
    if not vocab.exists():
        if not args.corpus:
            raise InputError(PUBMED_HELP)
        print(f"no --vocab given: training a WordPiece vocabulary of up to {args.vocab_size} tokens on the corpus")
        print(f"wrote {build_vocab(args.corpus, vocab, args.vocab_size)} tokens -> {vocab}")
    problem = data.shards_problem(shards, vocab, max_length, args.corpus,
                                  args.pubmed_preprocess if args.corpus else None)
    if problem:  # a build of another corpus, vocabulary or length, or a damaged one, is never trained on
        if shards.exists() and latest_checkpoint(out / "checkpoints"):  # --resume: never rebuilt under the checkpoints
            damaged = not data.shards_problem(shards, vocab, max_length, check_files=False)  # the settings are right
            raise InputError(f"{shards}: {problem}, and the checkpoints in {out / 'checkpoints'} were trained on them; "
                             + (f"`train.py prepare` with the run's corpus, vocabulary and length into {shards} builds "
                                "the damaged shard again, byte for byte" if damaged else
                                "resume with the run's own --preset and flags, or pass another --out"))
        owner = shards.resolve().parent  # --shards given another run's folder: its checkpoints were trained on them
        if shards.exists() and owner != out.resolve() and latest_checkpoint(owner / "checkpoints"):
            raise InputError(f"{shards}: {problem}, and the checkpoints in {owner / 'checkpoints'} were trained on "
                             "them; build new ones in another --shards folder")
        if not args.corpus:
            raise InputError(PUBMED_HELP if not shards.exists() else f"{shards}: {problem}; pass --corpus to build "
                             "the shards again")
        if shards.exists():
            print(f"{shards}: {problem}: building the shards again")
        data.build_shards(args.corpus, vocab, shards, max_length, processes=args.processes,
                          preprocess=args.pubmed_preprocess)
    return vocab, shards


# ------------------------------------------------------------------------------------------------------- pre-training
def resolve_config(args):
    """Preset defaults, then every flag the user gave."""
    config = PRETRAIN_PRESETS[args.preset]
    overrides = {k: getattr(args, k) for k in asdict(config) if getattr(args, k, None) is not None}
    config = PretrainConfig(**{**asdict(config), **overrides})
    table = preset(args.preset).max_position_embeddings
    if config.max_length > table:
        raise InputError(f"--max-length {config.max_length}: longer than the position table of --preset "
                         f"{args.preset} ({table})")
    if (getattr(args, "max_predictions", None) or 0) > config.max_length:
        raise InputError(f"--max-predictions {args.max_predictions}: more masked slots than --max-length "
                         f"{config.max_length} tokens")
    slots = getattr(args, "max_predictions", None) or int((config.mask_prob + 0.005) * config.max_length)
    if slots < 1:  # ELECTRA masks int((mask_prob + 0.005) x length) slots: a length that gives none trains nothing
        raise InputError(f"--max-length {config.max_length}: no masked token at --mask-prob {config.mask_prob} "
                         f"(use at least {math.ceil(1 / (config.mask_prob + 0.005))})")
    if args.objective == "mlm":  # BERT-style: one discriminator-sized encoder trained on the MLM loss alone
        unused = [flag for flag in ("generator_size", "gen_weight", "disc_weight", "disc_prior_bias")
                  if getattr(args, flag, None) is not None]
        if unused:
            raise InputError(f"--{unused[0].replace('_', '-')}: has no effect with --objective mlm (no discriminator, "
                             "no separate generator)")
    if config.batch_size % (config.accumulation_steps * args.world_size):
        raise InputError(f"--batch-size {config.batch_size} is not divisible by --accumulation-steps "
                         f"{config.accumulation_steps} x {args.world_size} processes")
    return config


def model_config(args, config, tokenizer):
    overrides = dict(vocab_size=len(tokenizer.ids), pad_id=tokenizer.pad_id, mask_id=tokenizer.mask_id,
                     cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id, mask_prob=config.mask_prob,
                     max_position_embeddings=max(512, config.max_length), objective=args.objective)
    for flag in ("gen_weight", "disc_weight", "disc_prior_bias", "max_predictions"):
        if getattr(args, flag) is not None:
            overrides[flag] = getattr(args, flag)
    model = preset(args.preset, **overrides)
    if args.generator_size is not None:  # run_pretraining.py get_generator_config: hidden = round(fraction x hidden),
        hidden = round(args.generator_size * model.hidden_size)  # heads of 64 (at least one), FFN 4x
        heads = max(1, hidden // 64)
        if hidden < 1 or hidden % heads:
            raise InputError(f"--generator-size {args.generator_size}: a generator of hidden size {hidden} cannot "
                             f"be split into {heads} heads of 64 (ELECTRA's rule); choose a fraction giving a multiple "
                             "of 64")
        model.generator_hidden_size, model.generator_num_heads = hidden, heads
        model.generator_intermediate_size = 4 * hidden
    return model


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
    checkpoints = Path(args.out) / "checkpoints"
    if not args.resume and latest_checkpoint(checkpoints):  # a new run's steps would mix with the old ones
        raise InputError(f"{checkpoints}: holds the checkpoints of an earlier run (newest "
                         f"{latest_checkpoint(checkpoints).name}); pass --resume to continue it, or another --out")
    if runtime.is_main:
        vocab, shards = prepare_inputs(args, config.max_length)
    if runtime.world_size > 1:  # the other ranks wait for rank 0 to build the vocabulary and shards
        torch.distributed.barrier()
        vocab, shards = prepare_inputs(args, config.max_length)
    tokenizer = WordPieceTokenizer(vocab)
    device = runtime.device
    out = Path(args.out)
    loader = data.PretrainingData(shards, tokenizer.pad_id, tokenizer.sep_id)
    if loader.batches_per_epoch(config.batch_size) == 0:  # e.g. a whole text on one line: one example, cut at 128
        raise InputError(f"{shards}: {len(loader)} example{'' if len(loader) == 1 else 's'}, fewer than one batch of "
                         f"{config.batch_size} (ELECTRA's packing never splits a sentence across examples and drops "
                         "what overflows --max-length; plain text is read as one sentence per line)")

    seed_everything(config.seed, device)
    model = ElectraForPretraining(model_config(args, config, tokenizer)).to(device)
    optimizer = AdamWeightDecay(parameter_groups(model, config.weight_decay),
                                betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_epsilon)
    step, window, vocab_sha1 = 0, None, data.file_digest(vocab)
    if runtime.is_main:
        remove_stale_temporaries(checkpoints)  # save_atomic's unfinished writes of a killed run
    resume_from, state = latest_valid_checkpoint(checkpoints, CHECKPOINT_KEYS) if args.resume else (None, None)
    if args.resume and not resume_from:
        print(f"--resume: no checkpoint in {checkpoints}: starting from scratch")
    if resume_from:
        check_resumable(state, model.config, vocab_sha1, resume_from)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, window = state["step"], state.get("log_window")
        if step > config.train_steps:  # the loop would not run, and the export would be a model past its schedule
            raise InputError(f"{resume_from}: at step {step}, past --train-steps {config.train_steps}; pass "
                             f"--train-steps {step} or more to continue it")
        print(f"resumed from {resume_from} at step {step}")
        changed = {k: (v, getattr(config, k)) for k, v in state["pretrain"].items() if getattr(config, k) != v}
        if changed:  # allowed (e.g. more --train-steps), but then the run is no longer the one that was stopped
            print("note: settings differ from the checkpoint's: " +
                  ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items()))
    if config.warmup_steps > config.train_steps and runtime.is_main:  # legal, but rarely meant (a preset's warm-up)
        # ELECTRA multiplies warm-up and decay: (1 - s/T)(s/W) is highest at s = T/2, T/4W of the peak
        print(f"note: --warmup-steps {config.warmup_steps} is more than --train-steps {config.train_steps}: the "
              f"learning rate never exceeds {config.train_steps / (4 * config.warmup_steps):.1%} of --learning-rate")
    if runtime.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({"pretrain": asdict(config), "model": asdict(model.config),
                                                     "vocab": str(vocab), "shards": str(shards)}, indent=1))
        log = MetricsLog(out, step)  # metrics.jsonl (+ TensorBoard); keeps only what the resumed state has seen

    def save_checkpoint(step):  # every process calls it: under torchrun the log window is averaged over them
        # each process resumes from the mean of the processes' windows: the mean of the next line is then exact
        # (read back whole and split on the host: slicing the device vector would compile a graph per slice on XLA)
        window_sums = {} if sums is None else dict(zip(names, to_host(process_mean(sums, runtime)).unbind()))
        if runtime.is_main:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                     "pretrain": asdict(config), "model_config": asdict(model.config), "vocab_sha1": vocab_sha1,
                     # the log's running window: a resumed run's next metrics line equals an uninterrupted run's
                     "log_window": {"sums": window_sums, "count": count, "tokens": tokens}}
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
    # XLA: everything a step reads is device data before step 1 (Adam's moments and `finite` made and synced here;
    # `lr` and the log window's zeros sent from the host, see runtime.device_scalar), never a constant traced into the
    # step, and under SPMD the parameters and moments are marked replicated, as the step gives them back: step 1 is
    # then the same program as every later step, compiled once, not twice (tests/test_distributed.py)
    optimizer.init_state()
    finite = torch.ones((), dtype=torch.bool, device=device)  # checked on the host only when logging or saving
    sync(device)
    for tensor in [*model.parameters(), *(t for state in optimizer.state.values() for t in state.values())]:
        replicated(tensor, runtime.mesh)
    # the log window: the sums of the steps' 0-d outputs (losses, accuracies) in the order of `names`, on the device
    sums, names, count, tokens, last_time, record = None, [], 0, 0, time.perf_counter(), None
    bar = tqdm(total=config.train_steps, initial=step, desc="pretrain", unit="step", dynamic_ncols=True,
               disable=not runtime.is_main)
    # the steps since the last log line, before the checkpoint (when --save-every is not a multiple of --log-every)
    if window and window["sums"]:
        names = sorted(window["sums"])
        sums = torch.stack([window["sums"][k] for k in names]).to(device)
        count, tokens = window["count"], window["tokens"]
    stop = StopOnSignal()  # SIGINT / SIGTERM: finish the step, save, exit 130 / 143; a second Ctrl-C stops at once
    agree = None
    if runtime.world_size > 1:  # every process stops at the same step
        def agree(requested):
            flag = torch.tensor([requested], device=device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            return int(flag.item())
    for batch in stop.until_requested(batches, agree):
        lr = device_scalar(learning_rate_at(step, config), device)
        micro_batches = [{k: v.chunk(accumulation)[micro].to(device) for k, v in batch.items()}
                         for micro in range(accumulation)]  # gradient accumulation: batch 256 on a small machine
        seeds = None if device.type == "xla" else [  # XLA's generator advances inside the compiled step instead
            step_seed(config.seed, step, runtime.rank * accumulation + micro) for micro in range(accumulation)]
        outputs = train_step(model, step_model, optimizer, micro_batches, lr, config.clip_norm, seeds, autocast,
                             distributed=runtime.world_size > 1)
        names = sorted(name for name, value in outputs[0].items() if value.ndim == 0)
        if sums is None:  # a new window: zeros sent from the host (data, not a constant of the step's graph)
            sums = torch.zeros(len(names)).to(device)
        for micro_outputs in outputs:
            sums = sums + torch.stack([micro_outputs[name].float() for name in names])
            finite &= torch.isfinite(micro_outputs["loss"])
        last_outputs = outputs[-1]  # its per-token disc_logits/disc_labels give the AUC at log time, on the host
        count += accumulation
        tokens += batch["input_ids"].numel() * runtime.world_size
        sync(device)
        step += 1
        bar.update(1)
        if step % args.log_every == 0 or step == config.train_steps:
            check_finite(finite, step, checkpoints, runtime)
            # the processes' mean, divided by `count` on the host: no graph for XLA to compile (a division by 1 would
            # be another graph)
            values = process_mean(sums, runtime).tolist()
            now = time.perf_counter()
            record = {"step": step, "lr": learning_rate_at(step - 1, config),
                      **{k: round(v / count, 6) for k, v in zip(names, values)},
                      "tokens_per_s": round(tokens / (now - last_time), 1)}
            sums = None
            if "disc_logits" in last_outputs:
                record.update(discriminator_progress(last_outputs, record))
            if device.type == "xla":
                record["xla_compiles"] = xla_count(device, "CompileTime")
            if runtime.is_main:
                log.write(record)
            shown = {"loss": "loss", "gen_acc": "gen_accuracy", "disc_auc": "disc_auc", "tok_s": "tokens_per_s"}
            bar.set_postfix({short: f"{record[key]:.{0 if key == 'tokens_per_s' else 3}f}"  # what this run logged
                             for short, key in shown.items() if record.get(key) is not None})
            window_steps, count, tokens, last_time = count // accumulation, 0, 0, now  # the summary line's window
        if step % args.save_every == 0 or step == config.train_steps:
            check_finite(finite, step, checkpoints, runtime)
            save_checkpoint(step)
    bar.close()
    if stop.requested and step < config.train_steps:
        if step % args.save_every:
            check_finite(finite, step, checkpoints, runtime)
            save_checkpoint(step)
        if runtime.is_main:
            log.close()
            print(f"stopped at step {step}; `--resume` continues", file=sys.stderr)
        if runtime.world_size > 1:
            torch.distributed.destroy_process_group()
        return stop.exit_code
    if runtime.is_main:
        log.close()
        export_dir = out / "electramed-hf"
        save_pretrained(model.cpu(), export_dir, vocab_path=vocab)
        if record:
            print(summary_line(record, window_steps))
        print(f"done: {step} step{'s' * (step != 1)}; checkpoints in {checkpoints}; HuggingFace-format model in {export_dir}")
    if runtime.world_size > 1:
        torch.distributed.destroy_process_group()


def train_step(model, step_model, optimizer, micro_batches, lr, clip_norm, seeds=None, autocast=nullcontext(),
               distributed=False):
    """One optimizer step as `pretrain` runs it (bench.py times this very function): forward + backward of each
    micro-batch (seeds[i] seeds micro-batch i; None on XLA), gradients averaged over them, global-norm clipping,
    ELECTRA's optimizer at the tensor `lr`. `step_model` is `model` or its torch.compile/DDP wrapper. The XLA graph is
    cut by the caller (runtime.sync), after it has added its own bookkeeping. Returns each micro-batch's outputs,
    detached."""
    outputs = []
    for micro, micro_batch in enumerate(micro_batches):
        if seeds is not None:
            torch.manual_seed(seeds[micro])
        last = micro == len(micro_batches) - 1
        with autocast, (step_model.no_sync() if distributed and not last else nullcontext()):
            micro_outputs = step_model(**micro_batch)
            (micro_outputs["loss"] / len(micro_batches)).backward()
        outputs.append({name: value.detach() for name, value in micro_outputs.items()})
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    optimizer.step(lr)
    optimizer.zero_grad(set_to_none=True)
    return outputs


def summary_line(record, steps):
    """The run in one line: the last log line's means over its `steps` (those since the previous log line)."""
    line = f"step {record['step']} (mean of the last {steps} step{'s' * (steps != 1)}): loss {record['loss']:.3f}"
    if "gen_loss" in record:
        line += f"; generator loss {record['gen_loss']:.3f}, accuracy {record['gen_accuracy']:.3f}"
    if "disc_loss" in record:
        line += f"; discriminator loss {record['disc_loss']:.4f}"
        if record.get("disc_gain") is not None:
            gain = record["disc_gain"]  # the base rate's loss minus the discriminator's: < 0 is worse than guessing
            line += f", {abs(gain):.4f} nats {'under' if gain >= 0 else 'above'} the base rate"
        if record.get("disc_auc") is not None:
            line += f", replaced-token AUC {record['disc_auc']:.3f}"
    return line


def discriminator_progress(outputs, record):
    """What shows a discriminator learning long before its recall at p > 0.5 moves (README "Pre-training on a small
    budget"): disc_auc, the ROC AUC of the last micro-batch's replaced-token logits over its real non-special tokens
    (electramed.roc_auc: exact, ties averaged; this process's rows), and disc_gain, the base-rate entropy of the
    logged replaced share minus the logged disc_loss, in nats (0 = predicting the replaced share everywhere).
    Computed on the host from tensors the step already produced, so XLA compiles nothing for it."""
    auc = roc_auc(to_host(outputs["disc_logits"]).float(), to_host(outputs["disc_labels"]))
    share = min(max(record["replaced_fraction"], 1e-12), 1 - 1e-12)
    base_rate = -(share * math.log(share) + (1 - share) * math.log(1 - share))
    return {"disc_auc": None if math.isnan(auc) else round(auc, 6),
            "disc_gain": round(base_rate - record["disc_loss"], 6)}


def process_mean(tensor, runtime):
    """The mean of `tensor` over the torchrun processes (`tensor` itself in a single process)."""
    if runtime.world_size == 1:
        return tensor
    total = tensor.clone()
    torch.distributed.all_reduce(total)
    return total / runtime.world_size


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
FILE_OUTPUTS = ("vocab", "corpus")  # their --out names a file; every other command's --out is a folder
RUN_FOLDERS = {"pretrain": "a pre-training run", "finetune": "a fine-tuning run", "reproduce": "a reproduce run",
               "export": "an exported pre-trained model (discriminator/, generator/)"}


def check_out(path, folder):
    """--out must be a folder (or a file) or a path that can be made: say so before any work is done."""
    if not folder and str(path).endswith(("/", os.sep)):
        raise InputError(f"{path}: names a folder (--out names the file to write)")
    path = Path(path)
    blocking = next((parent for parent in path.parents if parent.exists() and not parent.is_dir()), None)
    if blocking is not None:
        raise InputError(f"{path}: cannot be made: {blocking} is a file, not a folder")
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{path}: cannot be written: {existing} is not writable (read-only or not yours)")
    if folder and path.exists() and not path.is_dir():
        raise InputError(f"{path}: exists and is not a folder (--out names a folder)")
    if not folder and path.is_dir():
        raise InputError(f"{path}: is a folder (--out names the file to write)")


def check_run_folder(out, kind):
    """A run folder holds one kind of run: never write one over another kind's (its config.json and metrics.jsonl
    would be replaced) or into a model directory (e.g. --out given the --init folder)."""
    found = run_folder_kind(out)
    if found not in (None, kind):
        raise InputError(f"{out}: holds {found}, not {kind}; pass another --out")


def run_folder_kind(out):
    """What a folder holds: one of RUN_FOLDERS' kinds, "a model directory", or None (empty, new, anything else)."""
    out = Path(out)
    config = data.read_json_or_none(out / "config.json") or {}
    found = (RUN_FOLDERS["export"] if (out / "discriminator").is_dir() or (out / "generator").is_dir() else
             "a model directory" if "architectures" in config else
             RUN_FOLDERS["pretrain"] if "pretrain" in config else
             RUN_FOLDERS["finetune"] if "finetune" in config or (out / "seed_0" / "config.json").is_file() else
             RUN_FOLDERS["reproduce"] if (out / "reproduce.json").is_file() else
             "a pre-training run's checkpoints" if any(out.glob("step_*.pt")) else
             "packed shards (index.json)" if (out / "index.json").is_file() else None)
    return found


def prepare(args):
    if not args.corpus:
        raise InputError("prepare needs --corpus: the text files or folders to pack")
    read_vocab(args.vocab)  # one line for a missing or bad vocabulary, before an earlier build is looked at
    out, folder = Path(args.out), Path(args.out).parent
    built = (out / "index.json").is_file()
    settings = (args.vocab, args.max_length, args.corpus, args.pubmed_preprocess, args.seed)
    kind = run_folder_kind(folder)
    if kind == RUN_FOLDERS["pretrain"] and out.name == "shards":  # a run's own shards: a damaged one is built again,
        if built and latest_checkpoint(folder / "checkpoints") and (  # byte for byte; another build never replaces
                problem := data.shards_problem(out, *settings, check_files=False)):  # them under its checkpoints
            raise InputError(f"{out}: {problem}, and the checkpoints in {folder / 'checkpoints'} were trained on them; "
                             "pass the run's corpus and settings to repair them, or another --out")
    elif kind is not None:
        raise InputError(f"{out}: inside {kind} ({folder}), whose files are its own; pass another --out")
    check_run_folder(out, "packed shards (index.json)")
    if built and (problem := data.shards_problem(out, *settings)):  # an earlier build: say why it goes, as pretrain
        print(f"{out}: {problem}: building the shards again")
    index = data.build_shards(args.corpus, args.vocab, args.out, args.max_length, seed=args.seed,
                              preprocess=args.pubmed_preprocess, processes=args.processes)
    shards = len(index["shards"])
    print(f"{index['examples']:,} examples of length {index['max_length']} in {shards} shard{'s' * (shards != 1)} "
          f"-> {args.out}")


def vocab(args):
    if vocab_record(args.out) == Path(args.out):  # X.json is the record written beside the vocabulary
        raise InputError(f"{args.out}: a .json name is the vocabulary's record; name the vocabulary X.txt")
    print(f"wrote {build_vocab(args.corpus, args.out, args.vocab_size)} tokens -> {args.out}")


CHECKPOINT_KEYS = ("model", "optimizer", "step", "pretrain", "model_config")
# ElectraConfig fields that change training but not the weights: a resumed run may change them (with a note)
RESUMABLE_CHANGES = {"mask_prob", "gen_weight", "disc_weight", "disc_prior_bias", "max_predictions"}


def check_resumable(state, model_config, vocab_sha1, path):
    """--resume continues the same model: one line naming what differs (e.g. another --preset)."""
    saved, now = state["model_config"], asdict(model_config)
    differ = [k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k]]
    if differ:
        raise InputError(f"{path}: the checkpoint's model differs from this run's: " + ", ".join(
            f"{k} {saved.get(k)} -> {now[k]}" for k in differ) + " (use its --preset and model flags to --resume)")
    if state.get("vocab_sha1", vocab_sha1) != vocab_sha1:
        raise InputError(f"{path}: trained with another vocabulary than this run's (same size, other tokens)")


def export(args):
    from electramed import ElectraConfig

    owner, run = Path(args.out).resolve().parent, Path(args.checkpoint).resolve().parent.parent
    if run_folder_kind(owner) == RUN_FOLDERS["pretrain"] and owner != run:  # e.g. its electramed-hf/
        raise InputError(f"{args.out}: inside another pre-training run ({owner}), whose model it holds; pass another "
                         "--out")
    state = load_checkpoint(args.checkpoint, ("model", "model_config", "step"))
    try:
        config = ElectraConfig(**state["model_config"])
        model = ElectraForPretraining(config)
        model.load_state_dict(state["model"])
    except (TypeError, ValueError, RuntimeError) as error:  # unknown config keys, wrong shapes
        raise InputError(f"{args.checkpoint}: not a checkpoint of this model ({str(error).splitlines()[0][:120]})")
    vocab, trained_with = args.vocab, state.get("vocab_sha1")  # the digest of the vocabulary the run trained with
    if vocab is None:  # the run's own: a model folder without one can't be fine-tuned
        recorded = (data.read_json_or_none(run / "config.json") or {}).get("vocab")
        found = [path for path in dict.fromkeys(map(Path, filter(None, (recorded, run / "vocab.txt"))))
                 if path.is_file()]
        vocab = next((str(path) for path in found if data.file_digest(path) == trained_with), None)
        if vocab is None and found:
            raise InputError(f"{found[0]}: not the vocabulary {args.checkpoint} was trained with (changed since); "
                             "pass --vocab with that one")
        print(f"vocabulary: {vocab} (the run's; --vocab to choose another)" if vocab else
              f"note: no vocabulary found for {args.checkpoint} (looked for {run / 'vocab.txt'} and its run's "
              "config.json): none copied (pass --vocab; finetune --init needs one)")
    if vocab and len(read_vocab(vocab)) != config.vocab_size:
        raise InputError(f"{vocab}: {len(read_vocab(vocab))} tokens, but the checkpoint's embeddings have "
                         f"{config.vocab_size} rows (pass the vocabulary it was trained with)")
    if args.vocab and trained_with and data.file_digest(vocab) != trained_with:  # the run's own was matched above
        raise InputError(f"{vocab}: not the vocabulary {args.checkpoint} was trained with (its digest differs from "
                         "the checkpoint's record)")
    save_pretrained(model, args.out, vocab_path=vocab)
    load_pretrained(args.out)  # read it back: an export that cannot be loaded is not an export
    print(f"exported step {state['step']} -> {args.out}")


# ------------------------------------------------------------------------------------------ fine-tuning (tasks.py)
def finetune(args):
    """Table 5's settings for the task, then every flag the user gave; one run, or --seeds runs and a summary."""
    config = tasks.DEFAULTS[args.task if args.task != "qa" else qa.qa_column(args.data)]
    overrides = {k: getattr(args, k) for k in asdict(config) if getattr(args, k, None) is not None}
    config = tasks.FinetuneConfig(**{**asdict(config), **overrides})
    if args.eval_data and args.task != "qa":
        raise InputError("--eval-data: for --task qa only (ner and re score the dev and test files of the --data "
                         "folder)")
    if args.doc_stride is not None and args.task != "qa":  # a NER sentence's windows overlap by half (benchmarks.py)
        raise InputError("--doc-stride: for --task qa only (the stride between a passage's windows)")
    out = Path(args.out)  # one layout per folder: OUT/seed_K/ with --seeds, OUT/result.json without
    if ((out / "seed_0").is_dir() if args.seeds == 1 else (out / "result.json").is_file() or
            (out / "checkpoint.pt").is_file()):
        held = "a run of several --seeds (seed_K/)" if args.seeds == 1 else "a single run (result.json)"
        raise InputError(f"{out}: holds {held}; pass another --out")
    splits = qa.qa_splits([args.data], args.eval_data or []) if args.task == "qa" else None
    if args.seeds > 1:
        reproduce.finetune_seeds(args.task, args.data, args.init, args.out, config, args.device, args.seeds, splits,
                                 args.resume)
        print((Path(args.out) / "summary.md").read_text(), end="")  # the paper's table layout, its numbers beside
    else:
        tasks.finetune(args.task, args.data, args.init, args.out, config, args.device, splits, args.resume)


def evaluate(args):
    task, scores = inference.evaluate_file(args.model, args.data, args.batch_size, args.max_length, args.device,
                                           args.golden)
    print(f"{task} model {args.model} on {args.data}:")
    print(inference.format_scores(scores))


def predict(args):
    if args.file and (Path(args.file).is_dir() or not Path(args.file).exists()):  # a pipe or /dev/null reads
        raise InputError(f"{args.file}: " + ("a folder, not a text file" if Path(args.file).is_dir() else
                                             "no such file"))
    try:  # stdin as bytes, decoded as strictly as a file (its text layer would let bad bytes through as escapes)
        raw = Path(args.file).read_bytes() if args.file else getattr(sys.stdin, "buffer", sys.stdin).read()
        text = (raw.decode("utf-8") if isinstance(raw, bytes) else raw).removeprefix("\ufeff")  # a BOM is no text
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        raise InputError(f"{args.file or 'stdin'}:{line}: not UTF-8 text (byte {error.start}: "
                         f"{error.reason})") from None
    if args.question is not None and not args.question.strip():
        raise InputError("--question: empty")
    if args.question:  # QA: the whole text is the passage; the top 5 answers with their probabilities
        answers = inference.predict_answers(args.model, args.question, text, device_name=args.device,
                                            max_length=args.max_length, batch_size=args.batch_size)
        for rank, (answer, probability) in enumerate(answers, 1):
            print(f"{rank}. {answer}\t{probability:.4f}")
        return
    # one example per line, split at "\n" alone (\r\n too): str.splitlines would also cut at \f, \x85, U+2028, ...
    lines = [line.removesuffix("\r") for line in text.removesuffix("\n").split("\n")]
    if not any(line.strip() for line in lines):
        raise InputError(f"{args.file or 'stdin'}: no text to predict on")
    for line in inference.predict_lines(args.model, lines, args.batch_size, args.max_length, args.device):
        print(line)


def reproduce_tables(args):
    """The paper's Tables 7-9 from one model: every (benchmark, seed) fine-tuning job, resumable (reproduce.py)."""
    reproduce.reproduce(args.init, args.out, args.seeds, args.tasks, args.device, args.epochs,
                        args.max_train_examples, args.max_eval_examples, args.data_root, args.keep_models)


def benchmark_list(text):
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in reproduce.TASK_CHOICES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: choose from {','.join(reproduce.TASK_CHOICES)}")
    return [name for name in reproduce.TASK_CHOICES if name in names]  # the paper's order, no duplicates


# -------------------------------------------------------------------------------------------------------------- CLI
# Flag types: a bad value is refused while parsing, in one line naming the flag and the allowed range (tasks.py's
# fine-tuning flags use the same ones).
MAX_POSITIONS = max(preset(name).max_position_embeddings for name in PRETRAIN_PRESETS)


def _parse_number(text, kind):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def ranged(kind, low, high, allowed):
    """An argparse type: a number of `kind` that passes both `low` and `high`, else the error names what is allowed."""
    def parse(text):
        value = _parse_number(text, kind)
        if not low(value) or not high(value):
            raise argparse.ArgumentTypeError(f"{text} is out of range: allowed {allowed}")
        return value
    return parse


positive_int = ranged(int, lambda v: v >= 1, lambda v: True, "a whole number >= 1")
non_negative_int = ranged(int, lambda v: v >= 0, lambda v: True, "a whole number >= 0")
positive_float = ranged(float, lambda v: v > 0, lambda v: True, "a number > 0")
non_negative_float = ranged(float, lambda v: v >= 0, lambda v: True, "a number >= 0")
probability_open = ranged(float, lambda v: v > 0, lambda v: v < 1, "a number in (0, 1), both ends excluded")
fraction_below_one = ranged(float, lambda v: v >= 0, lambda v: v < 1, "a number in [0, 1)")
fraction_up_to_one = ranged(float, lambda v: v > 0, lambda v: v <= 1, "a number in (0, 1]")
# torch seeds are 64-bit and the runs derive others from them (seed * 1_000 + epoch, runtime.step_seed): 2^31 is safe
seed_value = ranged(int, lambda v: v >= 0, lambda v: v < 2 ** 31, "a whole number from 0 to 2147483647")
# at least [CLS] a token [SEP] plus ELECTRA's random shorter targets (randint(5, max_length)); at most the positions
sequence_length = ranged(int, lambda v: v >= 5, lambda v: v <= MAX_POSITIONS, f"5 to {MAX_POSITIONS}, the "
                          "position table's size")
vocab_size = ranged(int, lambda v: v > len(SPECIAL_TOKENS), lambda v: True, f"more than the {len(SPECIAL_TOKENS)} "
                     "special tokens (and at least the corpus's characters)")
for _name, _parse in [("positive_int", positive_int), ("non_negative_int", non_negative_int),
                      ("positive_float", positive_float), ("non_negative_float", non_negative_float),
                      ("probability_open", probability_open), ("fraction_below_one", fraction_below_one),
                      ("fraction_up_to_one", fraction_up_to_one), ("seed_value", seed_value),
                      ("sequence_length", sequence_length), ("vocab_size", vocab_size)]:
    _parse.__name__ = _name  # argparse names the type in its messages


class ShowDefaults(argparse.HelpFormatter):
    """--help shows every flag's default: the value, "off" for a switch, "the preset's value" for a pre-training
    hyper-parameter left at None (resolve_config fills it from --preset), "(required)" for a required flag. Help
    texts that already say their default keep their own words."""
    PRESET_FLAGS = {*PretrainConfig.__dataclass_fields__, "generator_size", "gen_weight", "disc_weight",
                    "disc_prior_bias", "max_predictions"}

    def _get_help_string(self, action):
        text = action.help or ""
        if action.required:
            return text + " (required)"
        if "default" in text.lower() or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        if action.default is None:
            return text + " (default: the preset's value)" if action.dest in self.PRESET_FLAGS else text
        if action.default is False and action.nargs == 0:
            return text + " (default: off)"
        return text + " (default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its errors in our one-line form (the usage is in --help): `error: argument --x: ...`, exit 2."""

    def __init__(self, *args, formatter_class=ShowDefaults, **kwargs):  # subcommands' parsers are made by this class
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def error(self, message):
        self.exit(2, f"error: {message} (see: {self.prog} --help)\n")


def build_parser():
    parser = ArgumentParser(prog="train.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    parser.subcommands = commands.choices  # {name: its parser}
    number = dict(default=None)

    def add_corpus_flags(p, vocab_required):
        p.add_argument("--corpus", nargs="+", required=vocab_required, help="PubMed text: files or folders (plain "
                       "text with one sentence per line and blank lines between documents, PubTator, PubMedQA JSON, "
                       "token-per-line)" + ("" if vocab_required else "; default: the bundled sample of 500 PubMed "
                                            "abstracts in samples/pubmed/, to try the pipeline"))
        p.add_argument("--vocab", required=vocab_required, help="WordPiece vocab.txt" +
                       ("" if vocab_required else " (default: train one on --corpus, saved as OUT/vocab.txt)"))
        p.add_argument("--pubmed-preprocess", action="store_true", help="apply the paper's PubMed pre-processing "
                       "(lowercase, drop non-ASCII, Treebank word split) before WordPiece")
        p.add_argument("--processes", type=positive_int, default=2, help="processes for building shards (default 2)")

    p = commands.add_parser("pretrain", help="pre-train ELECTRAMed (builds the vocabulary and shards if needed)",
                            description="Pre-train the generator and discriminator jointly (replaced token "
                            "detection). Hyper-parameter flags default to the --preset's values: base = the "
                            "paper's Table 1.")
    add_corpus_flags(p, vocab_required=False)
    p.add_argument("--shards", help="folder of shards built by 'prepare' (default OUT/shards, built if missing)")
    p.add_argument("--vocab-size", type=vocab_size, default=31090, help="size of a vocabulary trained on --corpus "
                   "(default 31,090, SciVocab's size)")
    p.add_argument("--out", default="runs/pretrain", help="run folder: checkpoints/, metrics.jsonl, electramed-hf/")
    p.add_argument("--preset", choices=PRETRAIN_PRESETS, default="base", help="model size and its defaults: base "
                   "(paper), small (ELECTRA-Small), large, tiny (tests) (default base)")
    p.add_argument("--objective", choices=["electra", "mlm"], default="electra", help="electra: replaced token "
                   "detection; mlm: BERT-style masked LM on the discriminator-sized encoder (for comparison)")
    p.add_argument("--device", choices=["cpu", "cuda", "xla"], default="cpu", help="where to train (default cpu)")
    p.add_argument("--learning-rate", type=positive_float, **number, help="peak learning rate (base 2e-4, small 5e-4)")
    p.add_argument("--batch-size", type=positive_int, **number, help="sequences per optimizer step (base 256, small 128)")
    p.add_argument("--accumulation-steps", type=positive_int, **number, help="split each batch into this many "
                   "forward/backward passes (less memory; the same as that many torchrun processes, not as one pass: "
                   "each micro-batch draws its own masks; default 1)")
    p.add_argument("--max-length", type=sequence_length, **number, help="tokens per sequence (base 512, small 128)")
    p.add_argument("--train-steps", type=positive_int, **number, help="optimizer steps; the learning rate decays to 0 at the "
                   "last one (base/small 1,000,000)")
    p.add_argument("--warmup-steps", type=non_negative_int, **number, help="linear warm-up steps (base/small 10,000; tiny 20)")
    p.add_argument("--weight-decay", type=non_negative_float, **number, help="decoupled weight decay, not on LayerNorm or biases "
                   "(default 0.01)")
    p.add_argument("--adam-beta1", type=fraction_below_one, **number, help="Adam beta1 (default 0.9)")
    p.add_argument("--adam-beta2", type=fraction_below_one, **number, help="Adam beta2 (default 0.999)")
    p.add_argument("--adam-epsilon", type=positive_float, **number, help="Adam epsilon (default 1e-6)")
    p.add_argument("--clip-norm", type=positive_float, **number, help="global gradient-norm clip (default 1.0)")
    p.add_argument("--mask-prob", type=probability_open, **number, help="share of tokens masked (default 0.15; large 0.25)")
    p.add_argument("--generator-size", type=fraction_up_to_one, default=None, help="generator hidden size as a fraction of the "
                   "discriminator's (default: the preset's, base 1/3, small 1/4)")
    p.add_argument("--gen-weight", type=non_negative_float, default=None, help="weight of the generator MLM loss (default 1)")
    p.add_argument("--disc-weight", type=non_negative_float, default=None, help="weight of the discriminator loss (default 50)")
    p.add_argument("--disc-prior-bias", action="store_true", default=None,
                   help="start the discriminator's output bias at the log-odds of --mask-prob instead of ELECTRA's 0 "
                   "(default off: the official start; ours, see README 'Pre-training on a small budget')")
    p.add_argument("--max-predictions", type=positive_int, default=None, help="masked slots per sequence (default: ELECTRA's "
                   "int((mask_prob + 0.005) x max_length), 15%%; 19 reproduces an unmodified official base/large run "
                   "at 512)")
    p.add_argument("--seed", type=seed_value, **number, help="seed for initialisation, masking and data order "
                   "(default 12345)")
    p.add_argument("--log-every", type=positive_int, default=100, help="pull metrics to the host and log every N steps")
    p.add_argument("--save-every", type=positive_int, default=1000, help="write a checkpoint every N steps")
    p.add_argument("--keep-checkpoints", dest="keep_checkpoints", type=positive_int, default=5, help="checkpoints to "
                   "keep, the newest (default 5, the official keep_checkpoint_max)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in OUT/checkpoints")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True, help="bf16 autocast on CUDA")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    p.set_defaults(run=pretrain)

    p = commands.add_parser("prepare", help="tokenize and pack a corpus into pre-training shards",
                            description="Tokenize a corpus with a WordPiece vocabulary and pack it into fixed-length "
                            "pre-training examples as ELECTRA does (build_pretraining_dataset.py), in shard files that "
                            "'pretrain --shards' reads; complete shards of an earlier build are reused.")
    add_corpus_flags(p, vocab_required=True)
    p.add_argument("--out", required=True, help="shard folder")
    p.add_argument("--max-length", type=sequence_length, default=512, help="tokens per example (default 512, the paper's)")
    p.add_argument("--seed", type=seed_value, default=12345,
                   help="seed for ELECTRA's random segment and length choices")
    p.set_defaults(run=prepare)

    p = commands.add_parser("vocab", help="train a WordPiece vocabulary on a corpus",
                            description="Train a WordPiece vocabulary (BERT's format, one token per line) on a corpus; "
                            "a small corpus can yield fewer tokens than --vocab-size: the count written is printed.")
    p.add_argument("--corpus", nargs="+", required=True, help="text files or folders (formats as for pretrain)")
    p.add_argument("--out", required=True, help="vocab.txt to write (and beside it X.json for X.txt: the "
                   "corpus it came from, which pretrain checks before reusing it)")
    p.add_argument("--vocab-size", type=vocab_size, default=31090, help="number of tokens (default 31,090)")
    p.set_defaults(run=vocab)

    p = commands.add_parser("export", help="write a checkpoint as HuggingFace ELECTRA directories",
                            description="Write a pre-training checkpoint as two transformers ELECTRA directories, "
                            "OUT/discriminator (ElectraForPreTraining) and OUT/generator (ElectraForMaskedLM), and "
                            "read them back to check them.")

    p.add_argument("--checkpoint", required=True, help="a step_*.pt file from a pre-training run")
    p.add_argument("--out", required=True, help="folder for discriminator/ and generator/")
    p.add_argument("--vocab", help="vocab.txt to copy beside the weights (default: the run's, found where the run "
                   "folder's config.json says or as RUN/vocab.txt, RUN being the folder above checkpoints/; checked "
                   "against the checkpoint's record of it)")
    p.set_defaults(run=export)

    p = commands.add_parser("corpus", help="PubMed baseline XML -> pre-training text (the paper's corpus)",
                            description="Build the BlueBERT PubMed corpus the paper pre-trained on from PubMed's own "
                            "files: titles + abstracts, one pre-processed sentence per line, a blank line between "
                            "abstracts (pubmed.py). Later files and <DeleteCitation> win, as PubMed's update rules say.")
    p.add_argument("--pubmed", nargs="+", required=True, help="baseline files (pubmed25n0001.xml.gz ...), folders of "
                   "them, or their URLs (https://ftp.ncbi.nlm.nih.gov/pubmed/baseline/...), in PubMed's order")
    p.add_argument("--out", required=True, help="text file to write (written under a temporary name, then renamed)")
    p.add_argument("--processes", type=positive_int, default=2, help="files converted in parallel")
    p.add_argument("--download-dir", default="pubmed-baseline", help="where URLs are downloaded (a stopped download "
                   "resumes from here; files are checked against PubMed's .md5)")
    p.set_defaults(run=pubmed.corpus_command)

    p = commands.add_parser("finetune", help="fine-tune a model on NER, relation extraction or QA (paper Table 5)",
                            description="Fine-tune a pre-trained ELECTRA discriminator (ours or any transformers one) "
                            "on a benchmark folder (train/dev/test). Dev F1 each epoch, the best epoch kept as "
                            "OUT/best (a transformers directory), test scored once with it: OUT/metrics.jsonl, "
                            "OUT/result.json. Defaults are the paper's Table 5; epochs as the official code.")
    p.add_argument("--task", choices=["ner", "re", "qa"], required=True, help="ner: token tagging; re: sentence "
                   "classification; qa: answer spans (SQuAD v1.1 format; Table 5's BioASQ settings when the --data "
                   "name contains 'bioasq', else SQuAD's)")
    p.add_argument("--data", required=True, help="ner/re: the benchmark's folder (train, dev, test), e.g. "
                   "../shared/data/ner/NCBI-disease; qa: a SQuAD-format training file or a folder of them (all "
                   "trained on: what is scored goes in --eval-data)")
    p.add_argument("--init", required=True, help="model directory to start from (pre-trained or fine-tuned)")
    p.add_argument("--eval-data", nargs="+", help="qa: files or folders to score, never trained on: BioASQ golden "
                   "files (named *golden*), the test batches that share their questions (SAcc/LAcc/MRR per batch at "
                   "the end), and any other SQuAD file as the dev set (EM/F1 each epoch, best kept) (default: none, "
                   "the last epoch is kept)")
    p.add_argument("--out", required=True, help="run folder (written only after the inputs check out)")
    p.add_argument("--seeds", type=positive_int, default=1, help="runs with seeds --seed, --seed+1, ... into "
                   "OUT/seed_K/, then OUT/summary.json and OUT/summary.md with the paper's numbers (default 1: "
                   "one run in OUT)")
    p.add_argument("--epochs", type=positive_int, help="passes over the training set (default 3, "
                   "configure_finetuning.py; qa: SQuAD 2, BioASQ 3 as ELECTRAMed's run_factoid.py)")
    p.add_argument("--learning-rate", type=positive_float, help="peak learning rate (default 5e-5, Table 5; qa: SQuAD "
                   "3e-5, BioASQ 5e-6; those are for base: the tiny preset learns at 1e-3)")
    p.add_argument("--batch-size", type=positive_int, help="examples per step (default 32, Table 5; qa: 16)")
    p.add_argument("--max-length", type=sequence_length, help="word pieces per example incl. [CLS]/[SEP]; longer NER "
                   "sentences are split into overlapping windows, RE text is cut (default 128, Table 5; qa: 384, "
                   "question and passage window)")
    p.add_argument("--doc-stride", type=positive_int, help="qa: tokens between the starts of a passage's windows "
                   "(default 128, Table 5)")
    p.add_argument("--layerwise-decay", type=positive_float, help="learning rate x decay^(n+2-depth); the top "
                   "layer gets decay^2, as the official code (default 0.8, Table 5)")
    p.add_argument("--warmup-proportion", type=fraction_below_one, help="share of the steps with a linear "
                   "warm-up (default 0.1, configure_finetuning.py)")
    p.add_argument("--weight-decay", type=non_negative_float, help="decoupled weight decay, not on LayerNorm or "
                   "biases (default 0, Table 5; the official code uses 0.01)")
    p.add_argument("--dropout", type=fraction_below_one, help="dropout and attention dropout (default 0.1, Table 5)")
    p.add_argument("--seed", type=seed_value, help="seed of the head's initialisation, dropout and data "
                   "order (default 12345)")
    p.add_argument("--max-train-examples", type=positive_int, help="quick looks: train on the first N examples "
                   "only (default: all)")
    p.add_argument("--max-eval-examples", type=positive_int, help="quick looks: score the first N dev/test "
                   "examples only; the scores are then not the benchmark's (default: all)")
    p.add_argument("--device", choices=["cpu", "cuda", "xla"], default="cpu", help="where to train")
    p.add_argument("--resume", action="store_true", help="continue a run stopped by Ctrl-C/SIGTERM from "
                   "OUT/checkpoint.pt (with --seeds: finished seeds are kept)")
    p.set_defaults(run=finetune)

    p = commands.add_parser("evaluate", help="score a fine-tuned model on one data file",
                            description="Precision, recall and F1 of a fine-tuned model (finetune's OUT/best or a "
                            "transformers ElectraFor* directory) on one NER or RE file, overall and per type/class; "
                            "a QA model: SQuAD EM/F1, or BioASQ SAcc/LAcc/MRR with --golden.")
    p.add_argument("--model", required=True, help="fine-tuned model directory")
    p.add_argument("--data", required=True, help="a data file in the task's format (its labels must be the model's)")
    p.add_argument("--golden", help="qa: the BioASQ golden file of the --data test batch (SAcc/LAcc/MRR); without "
                   "it a QA file is scored by its own answers (SQuAD EM/F1) (default: none)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="examples per forward pass")
    p.add_argument("--max-length", type=sequence_length, help="word pieces per example, for a qa model per window "
                   "(default: what the model was fine-tuned with, recorded in its config.json; if not recorded, "
                   "Table 5's: 128, qa 384 with stride 128)")
    p.add_argument("--device", choices=["cpu", "cuda", "xla"], default="cpu", help="where to run")
    p.set_defaults(run=evaluate)

    p = commands.add_parser("predict", help="mark entities / label relations in raw text",
                            description="One example per line from FILE or stdin. NER: the line with each entity "
                            "marked [[entity]]/TYPE (the paper's Table 6); RE: the predicted label, a TAB, the line.")
    p.add_argument("file", nargs="?", help="text file (default: stdin)")
    p.add_argument("--question", help="qa models: the question; the whole text is the passage, the top 5 answers are "
                   "printed with their probabilities (default: none)")
    p.add_argument("--model", required=True, help="fine-tuned model directory")
    p.add_argument("--batch-size", type=positive_int, default=32, help="examples per forward pass")
    p.add_argument("--max-length", type=sequence_length, help="word pieces per example, for a qa model per window "
                   "(default: what the model was fine-tuned with, recorded in its config.json; if not recorded, "
                   "Table 5's: 128, qa 384 with stride 128)")
    p.add_argument("--device", choices=["cpu", "cuda", "xla"], default="cpu", help="where to run")
    p.set_defaults(run=predict)

    p = commands.add_parser("reproduce", help="the paper's Tables 7, 8, 9 from one model (all benchmarks x seeds)",
                            description="Fine-tune --init on every benchmark of the paper's Tables 7 (NER), 8 (RE) and "
                            "9 (SQuAD -> BioASQ) with Table 5's settings, --seeds times, and write OUT/tables.md and "
                            "OUT/tables.json with the paper's numbers beside ours. Resumable: finished jobs "
                            "(OUT/jobs/<benchmark>/seed_<k>/job.json) are skipped when run again.")
    p.add_argument("--init", required=True, help="pre-trained model directory (ours or any transformers ELECTRA "
                   "discriminator)")
    p.add_argument("--out", required=True, help="folder for jobs/, tables.md, tables.json")
    p.add_argument("--seeds", type=positive_int, default=5, help="seeds per benchmark (the paper: 5)")
    p.add_argument("--tasks", type=benchmark_list, default=list(reproduce.TASK_CHOICES),
                   help="comma-separated benchmarks (default: all, ncbi,bc5cdr,jnlpba,chemprot,ddi,bioasq; bioasq "
                   "includes its SQuAD step)")
    p.add_argument("--data-root", default=reproduce.DATA_ROOT, help="benchmark data folder (default: "
                   "$ELECTRAMED_DATA, else ../shared/data beside the checkout)")
    p.add_argument("--device", choices=["cpu", "cuda", "xla"], default="cpu", help="where to fine-tune")
    p.add_argument("--epochs", type=positive_int, help="quick looks: epochs for every job (default: the official "
                   "code's, 3; SQuAD 2); printed into the tables' header")
    p.add_argument("--max-train-examples", type=positive_int, help="quick looks: train on the first N examples "
                   "(default: all); printed into the tables' header")
    p.add_argument("--max-eval-examples", type=positive_int, help="quick looks: score the first N examples of each "
                   "dev/test split and BioASQ batch (default: all); printed into the tables' header")
    p.add_argument("--keep-models", action="store_true", help="keep every job's fine-tuned model (a base one is "
                   "~420 MB; by default each is removed once its scores are written)")
    p.set_defaults(run=reproduce_tables)
    return parser


def main(argv=None):
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # said by the subcommand's parser, so that its line points at `train.py COMMAND --help`
            parser.subcommands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
        for name in ("out", "init", "model", "data", "vocab", "checkpoint", "shards", "eval_data", "golden", "corpus",
                     "file", "data_root", "pubmed", "download_dir"):
            values = getattr(args, name, None)
            if any(isinstance(value, str) and not value.strip()  # "" would be the current folder, "."
                   for value in (values if isinstance(values, list) else [values])):
                parser.subcommands[args.command].error(f"--{name.replace('_', '-')}: an empty path (an unset "
                                                       "shell variable?)")
    except SystemExit as exit:  # --help (0) or a bad flag (2, its one line already printed)
        return exit.code
    try:
        if getattr(args, "out", None):  # a bad --out fails now, before any work (and before anything is written)
            check_out(args.out, folder=args.command not in FILE_OUTPUTS)
            folder = Path(args.out).parent  # a file in a run's folder is the run's (its vocab.txt: the checkpoints
            if args.command in FILE_OUTPUTS and (kind := run_folder_kind(folder)) is not None:  # were trained with it)
                raise InputError(f"{args.out}: inside {kind} ({folder}), whose files are its own; pass another --out")
            if args.command in RUN_FOLDERS:
                check_run_folder(args.out, RUN_FOLDERS[args.command])
        # one run at a time in a run folder (under torchrun, rank 0 holds it for all)
        locked = args.command in RUN_FOLDERS and os.environ.get("RANK", "0") == "0"
        with run_folder_lock(args.out) if locked else nullcontext():
            return args.run(args) or 0  # a stopped pre-training run returns 130 / 143
    except InputError as error:
        close_progress_bars()
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the file system refused (disk full, permissions): the path, not a traceback
        if error.filename is None:
            raise
        close_progress_bars()
        print(f"error: {error.filename}: {error.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C outside the training loop (building the vocabulary or shards)
        close_progress_bars()
        print("error: interrupted; nothing half-written is trusted by the next run", file=sys.stderr)
        return 130


def close_progress_bars():
    """Close the bars an error left open, so that the error line starts a line of its own."""
    for bar in list(getattr(tqdm, "_instances", ())):  # tqdm's registry of open bars
        bar.close()


if __name__ == "__main__":
    sys.exit(main())

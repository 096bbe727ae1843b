"""The pre-training loop of `python train.py pretrain`: a run folder's vocabulary and shards, ELECTRA's optimisation,
checkpoints that resume exactly, and the HuggingFace-format model at the end.

Pre-training follows ELECTRA (Clark et al. 2020; google-research/electra run_pretraining.py and
model/optimization.py) with the ELECTRAMed hyper-parameters (Miolo et al. 2021, Table 1) as the `base` defaults:
Adam without bias correction, decoupled weight decay 0.01 (not on LayerNorm or biases), global-norm clipping 1.0,
learning rate = peak x linear decay to 0 x warm-up ramp, applied together from step 0.

A run folder (--out): vocab.txt and its record vocab.json (unless --vocab), shards/ (data.py; unless --shards),
config.json, metrics.jsonl, checkpoints/step_NNNNNNN.pt, and at the end electramed-hf/ (discriminator/, generator/).
"""
import json
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

import data
from electramed import ElectraForPretraining, preset, roc_auc, save_pretrained
from runtime import (AdamWeightDecay, MetricsLog, StopOnSignal, device_scalar, latest_checkpoint,
                     latest_valid_checkpoint, linear_schedule, parameter_groups, remove_stale_temporaries, replicated,
                     save_atomic, seed_everything, setup_runtime, step_seed, sync, to_cpu, to_host, xla_count)
from tokenizer import SPECIAL_TOKENS, InputError, WordPieceTokenizer, read_vocab, train_vocab, write_vocab

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
    recorded = data.read_json_or_none(out / "config.json")
    if latest_checkpoint(out / "checkpoints") and isinstance(recorded, dict):  # --resume without --vocab or --shards:
        for flag, own in (("vocab", out / "vocab.txt"), ("shards", out / "shards")):  # the ones it was trained with
            path = recorded.get(flag)
            if not getattr(args, flag) and isinstance(path, str) and Path(path).resolve() != own.resolve():
                setattr(args, flag, path)
                print(f"--{flag} {path}: the run's own, from its config.json")
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


CHECKPOINT_KEYS = ("model", "optimizer", "step", "pretrain", "model_config")
# ElectraConfig fields that change training but not the weights: a resumed run may change them (with a note)
RESUMABLE_CHANGES = {"mask_prob", "gen_weight", "disc_weight", "disc_prior_bias", "max_predictions"}


def check_resumable(state, model_config, vocab_sha1, shards_sha1, path, shards):
    """--resume continues the same model: one line naming what differs (e.g. another --preset)."""
    saved, now = state["model_config"], asdict(model_config)
    differ = [k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k]]
    if differ:
        raise InputError(f"{path}: the checkpoint's model differs from this run's: " + ", ".join(
            f"{k} {saved.get(k)} -> {now[k]}" for k in differ) + " (use its --preset and model flags to --resume)")
    if state.get("vocab_sha1", vocab_sha1) != vocab_sha1:
        raise InputError(f"{path}: trained with another vocabulary than this run's (same size, other tokens)")
    if state.get("shards_sha1", shards_sha1) != shards_sha1:  # (checkpoints of older versions do not record it)
        raise InputError(f"{path}: trained on other examples than {shards} holds now (built again since, from "
                         "another corpus or seed?); resume with the shards it was trained on, or pass another --out")


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
    step, window, vocab_sha1, shards_sha1 = 0, None, data.file_digest(vocab), data.shards_digest(shards)
    if runtime.is_main:
        remove_stale_temporaries(checkpoints)  # save_atomic's unfinished writes of a killed run
    resume_from, state = latest_valid_checkpoint(checkpoints, CHECKPOINT_KEYS) if args.resume else (None, None)
    if args.resume and not resume_from:
        print(f"--resume: no checkpoint in {checkpoints}: starting from scratch")
    if resume_from:
        check_resumable(state, model.config, vocab_sha1, shards_sha1, resume_from, shards)
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
                                                     "vocab": str(vocab.resolve()), "shards": str(shards.resolve())},
                                                    indent=1))
        log = MetricsLog(out, step)  # metrics.jsonl (+ TensorBoard); keeps only what the resumed state has seen

    def save_checkpoint(step):  # every process calls it: under torchrun the log window is averaged over them
        # each process resumes from the mean of the processes' windows: the mean of the next line is then exact
        # (read back whole and split on the host: slicing the device vector would compile a graph per slice on XLA)
        window_sums = {} if sums is None else dict(zip(names, to_host(process_mean(sums, runtime)).unbind()))
        state = None if not runtime.is_main else to_cpu({
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "pretrain": asdict(config),
            "model_config": asdict(model.config), "vocab_sha1": vocab_sha1, "shards_sha1": shards_sha1,
            # the log's running window: a resumed run's next metrics line equals an uninterrupted run's
            "log_window": {"sums": window_sums, "count": count, "tokens": tokens}})
        # a finite loss does not make finite weights: the last update may overflow them (a huge --learning-rate).
        # Checked in rank 0's host copy (on XLA a check on the device would be one more graph to compile); the other
        # ranks hold the same weights and agree through check_finite (on the device: NCCL reduces CUDA tensors only)
        weights_finite = state is None or all(torch.isfinite(tensor).all() for tensor in state["model"].values()
                                              if tensor.is_floating_point())
        check_finite(torch.tensor(weights_finite, device=device), step, checkpoints, runtime, what="the weights")
        if runtime.is_main:
            save_atomic(state, checkpoints / f"step_{step:07d}.pt")
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


def check_finite(finite, step, checkpoints, runtime, what="the loss"):
    """Stop on a NaN/inf loss (or weights) before anything is saved: the last good checkpoint stays the newest one."""
    if runtime.world_size > 1:
        finite = finite.clone().float()
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
    if not bool(finite):
        raise SystemExit(f"error: {what} became NaN or infinite before step {step}; stopping without saving. The "
                         f"last good checkpoint is {latest_checkpoint(checkpoints) or 'none'} (try a lower "
                         "--learning-rate or more --warmup-steps)")

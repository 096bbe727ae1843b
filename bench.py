"""Benchmarks: speed and memory of our code beside a peer, measured in the same run and reported as ratios.

    python bench.py tokenizer --vocab V --text F     # ours vs transformers' BertTokenizerLegacy vs the Rust tokenizer
    python bench.py pretrain --preset small --seq 128 --batch 8   # one full ELECTRA step, ours vs transformers' classes
    python bench.py finetune --task ner --preset base --batch 32 --seq 128   # one NER fine-tuning step, ours vs
                                                     # transformers' ElectraForTokenClassification
    python bench.py prepare --vocab V --corpus DIR   # corpus -> shards, 1 and 2 processes vs tokenizers' encode_batch
    python bench.py faults                           # page faults per step with and without keep_freed_memory

Tests never assert timings; this file is where speed claims come from. The CPU here is noisy in bursts, so every
benchmark warms up, reports medians, and runs ours and the peer back to back with the same threads and allocator.
"""
import argparse
import sys
from pathlib import Path


# ----------------------------------------------------------------------------------------------------------- tokenizer
def bench_tokenizer(args):
    """Lines/s and MB/s of tokenizer.py beside transformers' BertTokenizerLegacy and the Rust BertWordPieceTokenizer.

    Every pass starts our tokenizer with an empty cache (a new instance, built outside the timing), so the cache only
    helps within the pass, as in one pass over a corpus. Contenders run interleaved within each repeat; medians.
    """
    import os
    import statistics
    import time

    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerLegacy

    from tokenizer import InputError, WordPieceTokenizer

    try:
        with open(args.text, encoding="utf-8") as file:
            lines = [line.rstrip("\n") for line in file if line.strip()]
    except UnicodeDecodeError as error:
        raise InputError(f"{args.text}: not UTF-8 text (byte {error.start}: {error.reason})") from None
    if not lines:
        raise InputError(f"{args.text}: no text to tokenize")
    megabytes = sum(len(line.encode("utf-8")) for line in lines) / 1e6
    legacy = BertTokenizerLegacy(args.vocab, do_lower_case=True)
    rust = BertWordPieceTokenizer(args.vocab, lowercase=True)
    legacy.wordpiece_tokenizer.max_input_chars_per_word = rust._tokenizer.model.max_input_chars_per_word = 200  # BERT's
    check = lines[:2000]  # same output, or the timing compares different work
    ours_check = [WordPieceTokenizer(args.vocab).encode(line).ids for line in check]
    assert ours_check == [legacy.encode(line) for line in check] == [rust.encode(line).ids for line in check], \
        "tokenizers disagree on this text: timing them side by side would be meaningless"

    def ours_pass(method):
        tokenizer = WordPieceTokenizer(args.vocab)  # empty cache
        encode = getattr(tokenizer, method)
        start = time.perf_counter()
        for line in lines:
            encode(line)
        return time.perf_counter() - start

    def timed(function):
        start = time.perf_counter()
        function()
        return time.perf_counter() - start

    contenders = {  # name -> one timed pass over all lines
        "ours encode (ids+offsets)": lambda: ours_pass("encode"),
        "ours tokenize_ids": lambda: ours_pass("tokenize_ids"),
        "BertTokenizerLegacy encode": lambda: timed(lambda: [legacy.encode(line) for line in lines]),
        "Rust encode, per line": lambda: timed(lambda: [rust.encode(line) for line in lines]),
        f"Rust encode_batch ({os.cpu_count()} threads)": lambda: timed(lambda: rust.encode_batch(lines)),
    }
    for run in contenders.values():  # warm-up: imports, regex compilation, allocator
        run()
    seconds = {name: [] for name in contenders}
    for _ in range(args.repeat):
        for name, run in contenders.items():
            seconds[name].append(run())
    median = {name: statistics.median(times) for name, times in seconds.items()}
    legacy_s, rust_s = median["BertTokenizerLegacy encode"], median["Rust encode, per line"]
    print(f"{args.text}: {len(lines):,} lines, {megabytes:.2f} MB; vocab {args.vocab}; median of {args.repeat}")
    print(f"{'':34} {'lines/s':>10} {'MB/s':>7} {'vs Legacy':>10} {'vs Rust per line':>17}")
    for name, value in median.items():
        print(f"{name:34} {len(lines) / value:10,.0f} {megabytes / value:7.2f} {legacy_s / value:9.2f}x "
              f"{rust_s / value:16.2f}x")


# ------------------------------------------------------------------------------- one side per child process (shared)
def rss_mb():
    """Resident memory of this process now, in MB."""
    import os

    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def peak_rss_mb():
    """Peak resident memory of this process so far, in MB (ru_maxrss is in KiB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def step_times(step, count):
    """Seconds of each of `count` calls of step()."""
    import time

    times = []
    for _ in range(count):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def run_sides(command, sides, rounds, threads):
    """Run `bench.py *command --side SIDE` for each side in a fresh process (its peak RSS is its own; the same torch
    threads, and the same allocator setting inside), each printing one JSON line with its median "step_s". The CPU is
    shared and slows down in bursts: the sides alternate for `rounds` rounds and each keeps its least-disturbed round
    (lowest median step), the fairest reading of both under the same conditions. -> {side: its JSON}."""
    import json
    import os
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    results = {}
    for _ in range(rounds):
        for side in sides:
            done = subprocess.run([sys.executable, os.path.abspath(__file__), *map(str, command), "--side", side],
                                  env=env, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"bench {command[0]}: the {side} run failed:\n{done.stderr[-3000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            if side not in results or result["step_s"] < results[side]["step_s"]:
                results[side] = result
    return results


def print_ratios(results):
    """The line the README's Speed table quotes: ours against transformers, same run."""
    ours, theirs = results["ours"], results["transformers"]
    growth = (ours["peak_rss_mb"] - ours["rss_before_mb"]) / (theirs["peak_rss_mb"] - theirs["rss_before_mb"])
    print(f"ours / transformers: tokens/s x{theirs['step_s'] / ours['step_s']:.2f}, peak RSS "
          f"x{ours['peak_rss_mb'] / theirs['peak_rss_mb']:.2f}, RSS growth x{growth:.2f}")


# ------------------------------------------------------------------------------------------------------------ pretrain
def bench_pretrain(args):
    """One full ELECTRA pre-training step -- generator and discriminator forward, backward, gradient clipping, the
    optimizer. Ours is exactly what `train.py pretrain` runs: pretrain.train_step with ELECTRA's optimizer
    (runtime.AdamWeightDecay: torch's fused AdamW kernel with its bias corrections off, on CPU). The peer is the same
    step built from transformers' ElectraForMaskedLM + ElectraForPreTraining (embeddings shared and the LM head re-tied,
    generator logits only at the masked slots: its strongest use) with the fastest optimizer torch has on CPU, fused
    AdamW. Both sides share electramed's masking, sampling and loss functions, so the networks and the optimizers
    differ. Each side runs in its own subprocess (same threads; the same allocator setting, runtime.keep_freed_memory)
    so that its peak RSS is its own.

    FLOPs are counted analytically: the matmuls of both networks' forward (2 per multiply-add: Q/K/V, attention
    output, FFN, the two attention products, embedding projections, heads; the generator head at the slots only),
    times 3 for forward + backward. Elementwise work (LayerNorm, GELU, softmax, dropout, Adam) is not counted.
    """
    import json
    import os
    import statistics
    import time

    import torch

    import electramed as em
    import runtime

    config = em.preset(args.preset, vocab_size=args.vocab_size)
    args.threads = args.threads or os.cpu_count()
    slots = int((config.mask_prob + 0.005) * args.seq)

    def encoder_flops(c, tokens):
        layer = 2 * tokens * (4 * c.hidden_size ** 2 + 2 * c.hidden_size * c.intermediate_size)
        layer += 2 * 2 * tokens * args.seq * c.hidden_size  # Q K^T and (attention weights) V
        project = 2 * tokens * c.embedding_size * c.hidden_size if c.embedding_size != c.hidden_size else 0
        return c.num_layers * layer + project

    def step_flops():
        tokens, gen = args.batch * args.seq, config.generator_config()
        discriminator = encoder_flops(config, tokens) + 2 * tokens * (config.hidden_size ** 2 + config.hidden_size)
        generator = encoder_flops(gen, tokens) + 2 * args.batch * slots * (
            gen.hidden_size * gen.embedding_size + gen.embedding_size * gen.vocab_size)
        return 3 * (discriminator + generator)

    def matmul_peak(n=2048, repeats=10):
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
        return 2 * n ** 3 / best / 1e9

    if args.side:  # ------------------------------------------------- child: time one side, print one JSON line
        torch.set_num_threads(args.threads)
        runtime.keep_freed_memory()  # the allocator setting pretrain.py uses on CPU, for every side
        device = torch.device("cpu")
        if args.side == "xla":  # our model on the XLA device (PJRT_DEVICE=CPU unless told otherwise)
            os.environ.setdefault("PJRT_DEVICE", "CPU")
            import torch_xla
            import torch_xla.core.xla_model as xm
            import torch_xla.debug.metrics as met

            device = torch_xla.device()
        if args.side == "transformers":
            import transformers
        rss_before = rss_mb()
        torch.manual_seed(0)
        ids = torch.randint(config.mask_id + 1, config.vocab_size, (args.batch, args.seq))
        ids[:, 0], ids[:, args.seq // 2], ids[:, -1] = config.cls_id, config.sep_id, config.sep_id
        mask, types = torch.ones_like(ids), torch.zeros_like(ids)
        types[:, args.seq // 2 + 1:] = 1
        ids, mask, types = ids.to(device), mask.to(device), types.to(device)
        if args.side in ("ours", "xla"):
            import pretrain

            model = em.ElectraForPretraining(config).to(device).train()
            params = list(model.parameters())
            optimizer = runtime.AdamWeightDecay(runtime.parameter_groups(model, 0.01), eps=1e-6)
            optimizer.init_state()  # as pretrain.py does: Adam's moments made before step 1, synced below (XLA)
            lr = runtime.device_scalar(2e-4, device)
            batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            if device.type == "xla":
                torch_xla.sync()  # step 1 is then the steady program: one compile of the step, not two
            seeds = iter(range(10 ** 9))

            def step():  # pretrain.py's step (seeded per step as pretrain.py does, except on XLA)
                pretrain.train_step(model, model, optimizer, [batch], lr, 1.0,
                                 None if device.type == "xla" else [next(seeds)])
                if device.type == "xla":
                    torch_xla.sync()  # cut the graph: compile (first steps only) and run
                    xm.wait_device_ops()  # wait for the device, for an honest step time
        else:
            def hf_config(c):
                return transformers.ElectraConfig(
                    vocab_size=c.vocab_size, embedding_size=c.embedding_size, hidden_size=c.hidden_size,
                    num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
                    intermediate_size=c.intermediate_size, attn_implementation="sdpa")
            discriminator = transformers.ElectraForPreTraining(hf_config(config)).train()
            generator = transformers.ElectraForMaskedLM(hf_config(config.generator_config())).train()
            generator.electra.embeddings = discriminator.electra.embeddings  # ELECTRA shares the embeddings
            generator.generator_lm_head.weight = discriminator.electra.embeddings.word_embeddings.weight  # re-tie
            params = list({id(p): p for p in [*discriminator.parameters(), *generator.parameters()]}.values())

            def forward():
                masked_ids, positions, weights = em.mask_tokens(ids, mask, config)
                hidden = generator.electra(masked_ids, attention_mask=mask, token_type_ids=types).last_hidden_state
                hidden = hidden.gather(1, positions[:, :, None].expand(-1, -1, hidden.shape[-1]))  # the N slots
                logits = generator.generator_lm_head(generator.generator_predictions(hidden))
                out = em.generator_metrics(logits, ids.gather(1, positions), weights)
                fake_ids, labels = em.replace_tokens(ids, positions, weights, logits, config.temperature)
                disc_logits = discriminator(fake_ids, attention_mask=mask, token_type_ids=types).logits
                out.update(em.discriminator_metrics(disc_logits, labels, mask))
                out["loss"] = config.gen_weight * out["gen_loss"] + config.disc_weight * out["disc_loss"]
                return out
            # the peer at its best on CPU: torch's fused AdamW (one fused pass over all parameters)
            optimizer = torch.optim.AdamW(params, lr=2e-4, eps=1e-6, weight_decay=0.01, fused=True)

            def step():
                optimizer.zero_grad(set_to_none=True)
                forward()["loss"].backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()

        warmup_times = step_times(step, args.warmup)
        compiles_after_warmup = met.metric_data("CompileTime")[0] if device.type == "xla" else None
        times = step_times(step, args.steps)
        peak_rss = peak_rss_mb()  # read before the matmul test
        if device.type == "xla":
            compiles, compile_ns = met.metric_data("CompileTime")[:2]
            print(json.dumps({"step_s": statistics.median(times), "warmup_times": warmup_times,
                              "compiles_after_warmup": compiles_after_warmup, "compile_s": compile_ns / 1e9,
                              "compiles_after_timed_steps": compiles}))
            return
        print(json.dumps({"step_s": statistics.median(times), "times": times, "peak_rss_mb": peak_rss,
                          "warmup_times": warmup_times,
                          "rss_before_mb": rss_before, "params": sum(p.numel() for p in params),
                          "matmul_peak": matmul_peak()}))
        return

    # ------------------------------------------------------------------------------ parent: both sides, then ratios
    if args.device == "xla":
        return bench_pretrain_xla(args)
    if args.device != "cpu":
        raise SystemExit("bench pretrain: --device cpu or xla (a GPU run is train.py pretrain --device cuda)")
    results = run_sides(["pretrain", "--preset", args.preset, "--seq", args.seq, "--batch", args.batch, "--steps",
                         args.steps, "--warmup", args.warmup, "--threads", args.threads, "--vocab-size",
                         args.vocab_size], ("transformers", "ours"), args.rounds, args.threads)
    flops = step_flops()
    peak = max(result["matmul_peak"] for result in results.values())
    tokens = args.batch * args.seq
    print(f"pretrain step: preset {args.preset}, seq {args.seq}, batch {args.batch}, vocab {args.vocab_size}, "
          f"{args.threads} threads; median of {args.steps} steps after {args.warmup} warm-up, best of "
          f"{args.rounds} alternating round(s); ours: pretrain.train_step + ELECTRA's AdamWeightDecay; transformers: "
          f"fused AdamW; both: glibc keeping freed memory")
    per_side = ", ".join(f"{side} {result['matmul_peak']:.0f}" for side, result in results.items())
    print(f"model FLOPs per step {flops / 1e9:.1f} GFLOP (matmuls, forward x 3); fp32 matmul peak "
          f"{peak:.0f} GFLOP/s (best 2048^3 torch.mm, measured by each side: {per_side})")
    print(f"{'':13} {'params':>10} {'step ms':>8} {'tokens/s':>9} {'GFLOP/s':>8} {'% peak':>7} {'peak RSS MB':>12} "
          f"{'RSS growth MB':>14}  step times ms")
    for side, result in results.items():
        print(f"{side:13} {result['params']:10,} {1e3 * result['step_s']:8.0f} {tokens / result['step_s']:9.0f} "
              f"{flops / result['step_s'] / 1e9:8.1f} {100 * flops / result['step_s'] / 1e9 / peak:6.1f}% "
              f"{result['peak_rss_mb']:12.0f} {result['peak_rss_mb'] - result['rss_before_mb']:14.0f}  "
              f"{' '.join(f'{1e3 * t:.0f}' for t in result['times'])}")
    print_ratios(results)


def bench_pretrain_xla(args):
    """Our step on the XLA device beside the same step in eager CPU torch, each in its own process: compile count and
    time, the first steps (which compile), and the steady-state step once no step compiles any more."""
    import os

    args.threads = args.threads or os.cpu_count()
    sides = run_sides(["pretrain", "--preset", args.preset, "--seq", args.seq, "--batch", args.batch, "--steps",
                       args.steps, "--warmup", max(3, args.warmup), "--threads", args.threads, "--vocab-size",
                       args.vocab_size, "--device", "xla"], ("ours", "xla"), 1, args.threads)
    results = {"cpu": sides["ours"], "xla": sides["xla"]}
    cpu, xla = results["cpu"], results["xla"]
    tokens = args.batch * args.seq
    print(f"pretrain step on XLA ({os.environ.get('PJRT_DEVICE', 'CPU')}) vs eager CPU: preset {args.preset}, "
          f"seq {args.seq}, batch {args.batch}, {args.threads} threads; median of {args.steps} steps after "
          f"{max(3, args.warmup)} warm-up steps")
    print(f"{'':5} {'step 1 s':>9} {'step 2 s':>9} {'steady ms':>10} {'tokens/s':>9} {'compiles':>9} {'compile s':>10}")
    for name, result in results.items():
        compiles = (f"{result['compiles_after_warmup']} -> {result['compiles_after_timed_steps']}"
                    if name == "xla" else "-")
        compile_s = f"{result['compile_s']:.1f}" if name == "xla" else "-"
        print(f"{name:5} {result['warmup_times'][0]:9.2f} {result['warmup_times'][1]:9.2f} "
              f"{1e3 * result['step_s']:10.1f} {tokens / result['step_s']:9.0f} {compiles:>9} {compile_s:>10}")
    print(f"xla / cpu steady step time: x{xla['step_s'] / cpu['step_s']:.2f} (compiles after warm-up -> after the "
          f"timed steps: {xla['compiles_after_warmup']} -> {xla['compiles_after_timed_steps']}; equal = no recompile)")


# ------------------------------------------------------------------------------------------------------------ finetune
def bench_finetune(args):
    """One NER fine-tuning step -- forward, loss, backward, clipping at 1.0, the optimizer -- as `train.py finetune`
    runs it: tasks.TokenTagger on an electramed Encoder with its loss, ELECTRA's AdamWeightDecay over
    tasks.finetune_parameter_groups, the settings of tasks.FinetuneConfig (Table 5: lr 5e-5 at its peak, betas
    0.9/0.999, eps 1e-6, layer-wise decay 0.8, weight decay 0, dropout 0.1). The peer: transformers'
    ElectraForTokenClassification (sdpa attention, the same sizes and dropout, its own loss on the same labels) with
    torch's fused AdamW at the same lr, betas, eps and per-layer lr scales (tasks.layer_depth), weight decay 0: the
    optimizers differ only in ELECTRA's missing bias correction (ours is the same fused kernel, runtime.fused_update).
    Labels as benchmarks.ner_features makes them: a tag on the first piece of each word, -100 on the other pieces and on
    [CLS]/[SEP]. Each side in its own process, as `bench pretrain`."""
    import json
    import os
    import statistics

    import torch

    import electramed as em
    import runtime
    import tasks

    config, settings = em.preset(args.preset, vocab_size=args.vocab_size), tasks.FinetuneConfig()
    args.threads = args.threads or os.cpu_count()
    if args.side:  # ------------------------------------------------- child: time one side, print one JSON line
        torch.set_num_threads(args.threads)
        runtime.keep_freed_memory()  # the allocator setting pretrain.py and tasks.py use on CPU, for both sides
        if args.side == "transformers":
            import transformers
        rss_before = rss_mb()
        torch.manual_seed(0)
        ids = torch.randint(config.mask_id + 1, config.vocab_size, (args.batch, args.seq))
        ids[:, 0], ids[:, -1] = config.cls_id, config.sep_id
        mask, types = torch.ones_like(ids), torch.zeros_like(ids)
        labels = torch.randint(args.labels, ids.shape)
        labels[torch.rand(ids.shape) < 0.3] = -100  # continuation pieces of words
        labels[:, 0] = labels[:, -1] = -100
        num_layers = config.num_layers
        if args.side == "ours":
            encoder = em.Encoder(config)
            model = tasks.TokenTagger(encoder, tasks.set_dropout(encoder, config, settings.dropout), args.labels)
            model.train()
            optimizer = runtime.AdamWeightDecay(
                tasks.finetune_parameter_groups(model, settings.layerwise_decay, settings.weight_decay),
                betas=(settings.adam_beta1, settings.adam_beta2), eps=settings.adam_epsilon)
            batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "labels": labels}

            def step():  # exactly the step tasks.finetune runs
                tasks.train_step(model, optimizer, batch, torch.tensor(settings.learning_rate), settings.clip_norm).item()
        else:
            model = transformers.ElectraForTokenClassification(transformers.ElectraConfig(
                vocab_size=config.vocab_size, embedding_size=config.embedding_size, hidden_size=config.hidden_size,
                num_hidden_layers=num_layers, num_attention_heads=config.num_heads,
                intermediate_size=config.intermediate_size, hidden_dropout_prob=settings.dropout,
                attention_probs_dropout_prob=settings.dropout, num_labels=args.labels,
                attn_implementation="sdpa")).train()
            by_depth = {}  # transformers' names -> ours, for the official depths
            for name, param in model.named_parameters():
                ours = name.replace("electra.encoder.layer.", "encoder.layers.").replace("electra.", "encoder.")
                by_depth.setdefault(tasks.layer_depth(ours, num_layers), []).append(param)
            optimizer = torch.optim.AdamW(
                [{"params": params, "lr": settings.learning_rate * settings.layerwise_decay ** (num_layers + 2 - d)}
                 for d, params in by_depth.items()], betas=(settings.adam_beta1, settings.adam_beta2),
                eps=settings.adam_epsilon, weight_decay=0.0, fused=True)

            def step():
                loss = model(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                loss.item()
        step_times(step, args.warmup)
        times = step_times(step, args.steps)
        result = {"step_s": statistics.median(times), "times": times, "peak_rss_mb": peak_rss_mb(),
                  "rss_before_mb": rss_before, "params": sum(p.numel() for p in model.parameters()),
                  "groups": len(optimizer.param_groups)}
        if args.profile:  # where the time goes: one more step under torch.profiler, ops by their own CPU time
            with torch.profiler.profile() as profiler:
                step()
            ops = sorted(profiler.key_averages(), key=lambda op: op.self_cpu_time_total, reverse=True)
            result["profile_ms"] = {op.key: op.self_cpu_time_total / 1e3 for op in ops[:args.profile]}
        print(json.dumps(result))
        return

    # ------------------------------------------------------------------------------ parent: both sides, then ratios
    results = run_sides(["finetune", "--task", args.task, "--preset", args.preset, "--seq", args.seq, "--batch",
                         args.batch, "--labels", args.labels, "--steps", args.steps, "--warmup", args.warmup,
                         "--threads", args.threads, "--vocab-size", args.vocab_size, "--profile", args.profile],
                        ("transformers", "ours"), args.rounds, args.threads)
    tokens = args.batch * args.seq
    print(f"finetune step ({args.task}): preset {args.preset}, seq {args.seq}, batch {args.batch}, {args.labels} "
          f"labels, vocab {args.vocab_size}, {args.threads} threads; median of {args.steps} steps after "
          f"{args.warmup} warm-up, best of {args.rounds} alternating round(s)")
    print(f"ours: tasks.TokenTagger + AdamWeightDecay (lr {settings.learning_rate:g}, layer-wise decay "
          f"{settings.layerwise_decay}); transformers: ElectraForTokenClassification (sdpa) + fused AdamW (the same "
          f"lr scales, betas, eps {settings.adam_epsilon:g}, weight decay 0); both: clipping at 1.0, glibc keeping "
          f"freed memory")
    print(f"{'':13} {'params':>11} {'groups':>6} {'step ms':>8} {'tokens/s':>9} {'peak RSS MB':>12} "
          f"{'RSS growth MB':>14}  step times ms")
    for side, result in results.items():
        print(f"{side:13} {result['params']:11,} {result['groups']:6} {1e3 * result['step_s']:8.0f} "
              f"{tokens / result['step_s']:9.0f} {result['peak_rss_mb']:12.0f} "
              f"{result['peak_rss_mb'] - result['rss_before_mb']:14.0f}  "
              f"{' '.join(f'{1e3 * t:.0f}' for t in result['times'])}")
    print_ratios(results)
    if args.profile:
        ours, theirs = results["ours"]["profile_ms"], results["transformers"]["profile_ms"]
        print(f"one profiled step, self CPU ms of each side's top {args.profile} ops ('-': not in that side's top)")
        print(f"  {'op':48} {'ours':>8} {'transformers':>12}")
        for name in sorted(ours.keys() | theirs.keys(), key=lambda name: -max(ours.get(name, 0), theirs.get(name, 0))):
            cells = [f"{side[name]:.1f}" if name in side else "-" for side in (ours, theirs)]
            print(f"  {name:48} {cells[0]:>8} {cells[1]:>12}")


# ------------------------------------------------------------------------------------------------------------- prepare
def bench_prepare(args):
    """Corpus -> shards with 1 and 2 processes, beside the Rust tokenizer's encode_batch over the same sentences.

    The peer only tokenizes (no reading, packing or writing), with as many threads as it likes: a bar, not a twin.
    """
    import os
    import shutil
    import tempfile
    import time

    import data

    files = data.corpus_files(args.corpus)
    megabytes = sum(path.stat().st_size for path in files) / 1e6
    sentences = [s for path in files for document in data.read_documents(path) for s in document]
    results = {}
    for processes in (1, 2):
        out = tempfile.mkdtemp(prefix="bench-shards-")
        start = time.perf_counter()
        index = data.build_shards(args.corpus, args.vocab, out, args.max_length, processes=processes)
        results[f"ours, {processes} process{'es' if processes > 1 else ''}"] = time.perf_counter() - start
        shutil.rmtree(out)
    from tokenizers import BertWordPieceTokenizer

    rust = BertWordPieceTokenizer(args.vocab, lowercase=True)
    start = time.perf_counter()
    rust.encode_batch(sentences, add_special_tokens=False)
    peer = f"Rust tokenizers encode_batch ({os.environ.get('RAYON_NUM_THREADS', os.cpu_count())} threads)"
    results[peer] = time.perf_counter() - start
    print(f"corpus: {len(files)} files, {megabytes:.1f} MB, {len(sentences)} sentences -> "
          f"{index['examples']} examples of {args.max_length} tokens")
    for name, seconds in results.items():
        print(f"{name:<45} {seconds:7.2f} s {megabytes / seconds:7.2f} MB/s   "
              f"ratio to the peer {results[peer] / seconds:5.2f}x")


# -------------------------------------------------------------------------------------------------------------- faults
PRETRAINING_STEPS = """
import resource, sys, time, torch
sys.path.insert(0, {repo!r})
import electramed, pretrain, runtime
if {keep}:
    runtime.keep_freed_memory()
torch.manual_seed(0)
config = electramed.preset({preset!r}, vocab_size=31090)
model = electramed.ElectraForPretraining(config).train()
optimizer = runtime.AdamWeightDecay(runtime.parameter_groups(model, 0.01), eps=1e-6)
ids = torch.randint(config.mask_id + 1, config.vocab_size, ({batch}, {seq}))
batch = {{"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}}
def step(seed):  # pretrain.py's own step: its activations are allocated and freed in the same sizes every time
    pretrain.train_step(model, model, optimizer, [batch], torch.tensor(2e-4), 1.0, [seed])
for seed in range({warmup}):
    step(seed)
before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for seed in range({warmup}, {warmup} + {steps}):
    step(seed)
after = resource.getrusage(resource.RUSAGE_SELF)
print(after.ru_minflt - before.ru_minflt, after.ru_stime - before.ru_stime, time.perf_counter() - start)
"""


def bench_faults(args):
    """Minor page faults and kernel time of real pre-training steps (pretrain.train_step at --preset), with glibc's
    default allocator settings and with runtime.keep_freed_memory, each in a fresh process (the malloc setting is
    process-wide). By default glibc hands a step's large freed activations back to the OS and the next step faults
    them in again, 4 KiB at a time; with the setting they stay in the process. The counts depend on the machine, its
    load and glibc's dynamic thresholds, so they are measured here and never asserted by a test."""
    import os
    import subprocess

    repo = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads or os.cpu_count())}
    for keep in (False, True):
        code = PRETRAINING_STEPS.format(repo=repo, keep=keep, preset=args.preset, batch=args.batch, seq=args.seq,
                                        warmup=args.warmup, steps=args.steps)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        if done.returncode:
            raise SystemExit(f"bench faults: the run failed:\n{done.stderr[-3000:]}")
        faults, kernel_s, wall_s = done.stdout.split()
        per_step = int(faults) / args.steps
        print(f"{'keep_freed_memory' if keep else 'glibc default':18} {int(faults):9,} minor page faults in {args.steps} "
              f"{args.preset} steps ({per_step:,.0f} per step), kernel time {1000 * float(kernel_s) / args.steps:,.0f} "
              f"ms per step, step {1000 * float(wall_s) / args.steps:,.0f} ms")


def main(argv=None):
    # train.py's flag types and help layout (ranges named in one line, every default shown), and its error line
    from electramed import PRESETS, preset
    from tokenizer import InputError, read_vocab
    from train import ArgumentParser, ranged, non_negative_int, positive_int, sequence_length

    # the batches draw ordinary tokens from above [MASK]: at least one must exist
    mask_id = preset("small").mask_id  # the same in every preset
    bench_vocab_size = ranged(int, lambda v: v > mask_id + 1, lambda v: True,
                               f"a whole number > {mask_id + 1} (ids above [MASK], {mask_id})")
    bench_vocab_size.__name__ = "vocab_size"

    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name, help, run):
        sub = commands.add_parser(name, help=help)  # train.ArgumentParser: every default shown, one-line errors
        sub.set_defaults(run=run)
        return sub

    tok = command("tokenizer", "tokenizer throughput: lines/s and MB/s, with ratios", bench_tokenizer)
    tok.add_argument("--vocab", required=True, help="WordPiece vocab.txt")
    tok.add_argument("--text", required=True, help="text file, one item per line")
    tok.add_argument("--repeat", type=positive_int, default=3, help="timed passes per tokenizer (the median is "
                     "reported)")

    def step_flags(sub, preset, batch, steps, warmup, sides, source=""):
        """The flags of the two one-step benchmarks (pretrain, finetune); `source`: where their defaults come from."""
        sub.add_argument("--preset", choices=PRESETS, default=preset, help="model preset")
        sub.add_argument("--seq", type=sequence_length, default=128, help=f"sequence length (default 128{source})")
        sub.add_argument("--batch", type=positive_int, default=batch, help=f"batch size (default {batch}{source})")
        sub.add_argument("--steps", type=positive_int, default=steps, help="timed steps (after warm-up); the median is "
                         "reported")
        sub.add_argument("--warmup", type=non_negative_int, default=warmup, help="untimed warm-up steps")
        sub.add_argument("--threads", type=positive_int, help="torch threads, the same for both sides (default: all "
                         "cores)")
        sub.add_argument("--rounds", type=positive_int, default=2, help="alternating runs of each side; the fastest is "
                         "kept")
        sub.add_argument("--vocab-size", type=bench_vocab_size, default=31090, help="vocabulary size (default 31,090: "
                         "SciVocab's)")
        sub.add_argument("--side", choices=sides, help=argparse.SUPPRESS)  # internal: one child run

    pre = command("pretrain", "one full pre-training step: tokens/s, peak RSS, GFLOP/s", bench_pretrain)
    step_flags(pre, preset="small", batch=8, steps=10, warmup=3, sides=["ours", "transformers", "xla"])
    pre.add_argument("--device", choices=["cpu", "cuda", "xla"], default="cpu", help="where to run")

    fine = command("finetune", "one fine-tuning step (NER), ours vs transformers: tokens/s, peak RSS", bench_finetune)
    step_flags(fine, preset="base", batch=32, steps=5, warmup=1, sides=["ours", "transformers"], source=", Table 5")
    fine.add_argument("--task", choices=["ner"], default="ner", help="task head (ner: TokenTagger)")
    fine.add_argument("--labels", type=positive_int, default=3, help="tag labels (default 3: NCBI-disease's O, B-, I-)")
    fine.add_argument("--profile", type=non_negative_int, default=0, metavar="N", help="also profile one step of each "
                      "side and print the N ops that take the most CPU time on either (default 0: no profile)")

    prep = command("prepare", "corpus -> shards throughput with 1 and 2 processes", bench_prepare)
    prep.add_argument("--vocab", required=True, help="WordPiece vocab.txt")
    prep.add_argument("--corpus", required=True, nargs="+", help="corpus files or folders")
    prep.add_argument("--max-length", type=sequence_length, default=128, help="packed sequence length")

    faults = command("faults", "page faults and kernel time of pre-training steps, with and without "
                     "runtime.keep_freed_memory", bench_faults)
    faults.add_argument("--preset", choices=PRESETS, default="small", help="model preset")
    faults.add_argument("--seq", type=sequence_length, default=128, help="sequence length")
    faults.add_argument("--batch", type=positive_int, default=8, help="batch size")
    faults.add_argument("--steps", type=positive_int, default=5, help="measured steps")
    faults.add_argument("--warmup", type=non_negative_int, default=2, help="unmeasured steps before them")
    faults.add_argument("--threads", type=positive_int, help="torch threads (default: all cores)")

    args = parser.parse_args(argv)
    try:
        if getattr(args, "vocab", None):
            read_vocab(args.vocab)  # a missing or malformed vocabulary: one line naming it, before any timing
        if getattr(args, "text", None) and not Path(args.text).is_file():
            raise InputError(f"{args.text}: no such file")
        args.run(args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

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

This file is the command line: every subcommand's flags, their ranges and help, and the one-line errors. The work is
elsewhere: the pre-training loop in pretrain.py (ELECTRA's, the paper's Table 1 as the `base` defaults), fine-tuning
in tasks.py (the paper's Table 5 settings for each task: NER/RE lr 5e-5, batch 32, length 128, layer-wise decay 0.8;
SQuAD and BioASQ their own columns), evaluate and predict in inference.py, the paper's tables in reproduce.py.
"""
import argparse
import math
import os
import signal
import sys

if __name__ == "__main__":  # Ctrl-C while torch loads (seconds) ends the process quietly, not with an import traceback
    signal.signal(signal.SIGINT, signal.SIG_DFL)
if __name__ == "__mp_main__":  # a prepare/corpus worker, which imports this file as it starts: the parent alone
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # answers Ctrl-C (one line), and ends its workers
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

import data
import inference
import pretrain
import pubmed
import qa
import reproduce
import tasks
from electramed import ElectraForPretraining, load_pretrained, preset, save_pretrained
from runtime import latest_checkpoint, load_checkpoint, run_folder_lock
from tokenizer import SPECIAL_TOKENS, InputError, read_vocab

if __name__ == "__main__":  # from here on Ctrl-C is Python's KeyboardInterrupt again (main and StopOnSignal handle it)
    signal.signal(signal.SIGINT, signal.default_int_handler)

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


def check_not_an_input(out, files):
    """A file output never replaces one of the files it is made from (`vocab --corpus f.txt --out f.txt`)."""
    if any(Path(out).resolve() == Path(file).resolve() for file in files):
        raise InputError(f"{out}: is also an input; pass another --out")


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
    record = pretrain.vocab_record(args.out)
    if record == Path(args.out):  # X.json is the record written beside the vocabulary
        raise InputError(f"{args.out}: a .json name is the vocabulary's record; name the vocabulary X.txt")
    if record.exists() and not {"sha1", "sources"} <= set(data.read_json_or_none(record) or {}):
        raise InputError(f"{record}: exists and is not a vocabulary's record, which vocab writes there beside "
                         f"{Path(args.out).name}; move it, or pass another --out")
    print(f"wrote {pretrain.build_vocab(args.corpus, args.out, args.vocab_size)} tokens -> {args.out}")


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
    for given in [args.data, *(args.eval_data or [])]:  # the run's files would be read as data on the next run
        inputs = Path(given).resolve()
        if inputs == out.resolve() or inputs in out.resolve().parents or out.resolve() in inputs.parents:
            raise InputError(f"{out}: the same folder as, or nested with, the data {given}; pass another --out")
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
MAX_POSITIONS = max(preset(name).max_position_embeddings for name in pretrain.PRETRAIN_PRESETS)


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
    PRESET_FLAGS = {*pretrain.PretrainConfig.__dataclass_fields__, "generator_size", "gen_weight", "disc_weight",
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
    p.add_argument("--preset", choices=pretrain.PRETRAIN_PRESETS, default="base", help="model size and its defaults: base "
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
    p.set_defaults(run=pretrain.pretrain)

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
            if args.command in FILE_OUTPUTS:  # the files it reads, folders expanded (URLs are downloaded elsewhere)
                check_not_an_input(args.out, data.corpus_files(args.corpus) if args.command == "vocab" else
                                   [path for path in pubmed.input_files(args.pubmed) if "://" not in path])
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

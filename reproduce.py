"""Several seeds and the paper's tables: `train.py finetune --seeds N` (one benchmark) and `python train.py reproduce`
(the paper's Tables 7, 8 and 9 from one model directory), the paper's numbers beside ours.

    python train.py reproduce --init runs/pretrain/electramed-hf --out runs/reproduce --device cuda

Runs every (benchmark, seed) job with the paper's Table 5 settings (tasks.DEFAULTS) through tasks.finetune, nothing
re-implemented: NER on NCBI-disease, BC5CDR, JNLPBA (Table 7); RE on ChemProt and DDI-2013 (Table 8); QA as SQuAD v1.1
then BioASQ 7b factoid, scored on the five 7b test batches (Table 9). Seed k runs with FinetuneConfig.seed + k, as
finetune_seeds below. Jobs run seed by seed (every benchmark of seed 0 first), so a complete one-seed table exists
early and the ETA is measured over a representative mix.

Resumable: a job is finished once OUT/jobs/<benchmark>/seed_<k>/job.json exists (written atomically after
tasks.finetune returns); a second run skips finished jobs and says so, a stopped run loses the job in progress only.
OUT/reproduce.json pins the settings that make results comparable (model path and weights' SHA-1, data, epochs, example
limits): a later run with other settings refuses to mix them. OUT/tables.md and OUT/tables.json are rewritten after
every job.
"""
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tqdm import tqdm

import benchmarks
import metrics
import qa
import tasks
from data import write_json_atomic, write_text_atomic
from runtime import setup_runtime
from tokenizer import InputError

DATA_ROOT = Path(os.environ.get("ELECTRAMED_DATA", Path(__file__).resolve().parent.parent / "shared" / "data"))


@dataclass(frozen=True)
class Benchmark:
    task: str  # tasks.py's task
    table: int  # the paper's table
    name: str  # as the paper's table names it
    paths: tuple  # under the data root
    defaults: str  # the Table 5 column: tasks.DEFAULTS key
    paper: str | None  # PAPER key (Tables 7/8); Table 9 uses qa.PAPER_BIOASQ
    footnote: str | None  # how our data differs from the paper's
    comparable: bool = True  # False: a different task than the paper's, no difference is given


SQUAD_TRAIN = "qa/squad-v1.1/train-prefix-jupiter_bert/train-v1.1.first-complete-articles.DERIVED.json"
BENCHMARKS = {
    "ncbi": Benchmark("ner", 7, "NCBI-disease", ("ner/NCBI-disease",), "ner", "ncbi-disease", None),
    "bc5cdr": Benchmark("ner", 7, "BC5CDR", ("ner/BC5CDR",), "ner", "bc5cdr", None),
    "jnlpba": Benchmark("ner", 7, "JNLPBA", ("ner/JNLPBA",), "ner", "jnlpba",
                        "JNLPBA: ELECTRAMed's train file is unavailable; ours is DERIVED from the original "
                        "Genia4ERtask2.iob2 (its first 1,800 abstracts, 16,807 sentences vs the paper's 16,845: the "
                        "same tokens and labels, without ELECTRAMed's split of long sentences). Dev and test are "
                        "ELECTRAMed's files."),
    "chemprot": Benchmark("re", 8, "ChemProt", ("re/chemprot-scibert",), "re", "chemprot",
                          "ChemProt: BLUE's train and test files are unavailable. Ours is the substitute "
                          "re/chemprot-scibert (SciBERT's ChemProt: positive relations only, 13 fine-grained labels, "
                          "no negative class, so micro P = R = F1 = accuracy). A different task: NOT comparable with "
                          "the paper's 72.94, no difference given.", comparable=False),
    "ddi": Benchmark("re", 8, "DDI", ("re/ddi-2013",), "re", "ddi-2013",
                     "DDI-2013: BLUE's train file is unavailable; ours is rebuilt from the original XML corpus (Train "
                     "folder converted as BLUE does, minus every sentence of BLUE's dev set, matched by text): 20,297 "
                     "examples vs the paper's 18,779. Dev and test are ELECTRAMed's (BLUE's) files."),
    "squad": Benchmark("qa", 9, "SQuAD v1.1", (SQUAD_TRAIN, "qa/squad-v1.1/expmrc-dev-subset/expmrc-squad-dev.json"),
                       "squad", None,
                       "SQuAD v1.1 (the first step of BioASQ): the full SQuAD is unavailable; trained on the DERIVED "
                       "first 11 complete articles of train-v1.1.json (3,807 questions, ~4% of SQuAD's 87,599), the "
                       "epoch chosen on ExpMRC's 501-question subset of the official dev set."),
    "bioasq": Benchmark("qa", 9, "BioASQ 7b", ("qa/bioasq-7b-biobert-pytorch/BioASQ-train-factoid-7b.json",
                                               "qa/bioasq-7b"), "bioasq", None,
                        "BioASQ 7b: the paper's own train file is unavailable; ours is the substitute "
                        "BioASQ-train-factoid-7b.json of BioBERT-PyTorch (4,231 snippet examples), fine-tuned from "
                        "the SQuAD model of the same seed; no dev set (as the paper), the last epoch is kept. Test: "
                        "the five official 7b factoid batches, scored against their golden files."),
}
TASK_CHOICES = ("ncbi", "bc5cdr", "jnlpba", "chemprot", "ddi", "bioasq")  # bioasq brings its SQuAD step along
PRF = ("precision", "recall", "f1")  # Tables 7 and 8
# Paper Tables 7 and 8 (ELECTRAMed, mean of 5 seeds, test set): P, R, F1 in %, by the data folder's name.
PAPER = {"ncbi-disease": (85.87, 89.29, 87.54), "bc5cdr": (88.76, 91.34, 90.03), "jnlpba": (69.33, 78.56, 73.65),
         "chemprot": (75.47, 70.67, 72.94), "ddi-2013": (80.07, 78.24, 79.13)}


def job_dir(out, name, k):
    return Path(out) / "jobs" / name / f"seed_{k}"


def finished_job(out, name, k):
    """A finished job's record, or None (an unreadable job.json, from a crash while writing it, counts as none)."""
    try:
        return json.loads((job_dir(out, name, k) / "job.json").read_text())
    except (OSError, ValueError):
        return None


def is_finished(out, name, k):
    if finished_job(out, name, k) is None:
        return False
    if name == "squad" and finished_job(out, "bioasq", k) is None:  # BioASQ still needs the SQuAD model
        return (job_dir(out, name, k) / "best" / "config.json").is_file()
    return True


def expand(names):
    """The jobs' benchmark names in run order: bioasq is preceded by its SQuAD step."""
    return [step for name in names for step in (("squad", "bioasq") if name == "bioasq" else (name,))]


def check_settings(out, settings):
    """OUT/reproduce.json holds the settings of the results in OUT (written once the inputs check out); other settings
    would mix incomparable runs."""
    path = out / "reproduce.json"
    if path.is_file():
        before = json.loads(path.read_text())
        changed = [("the weights at --init (another SHA-1: exported or pre-trained again since)" if key == "init_sha1"
                    else f"{key} {before.get(key)} -> {value}") for key, value in settings.items()
                   if before.get(key) != value and (key in before or key != "init_sha1")]  # (older runs lack it)
        if changed:
            raise InputError(f"{path}: {out} holds results made with other settings ({'; '.join(changed)}); use "
                             f"another --out, or the same settings to resume")


def load_splits(name, data_root):
    """A benchmark's splits as tasks.finetune takes them."""
    benchmark = BENCHMARKS[name]
    paths = [data_root / path for path in benchmark.paths]
    if benchmark.task != "qa":
        return benchmarks.task_splits(benchmark.task, paths[0])
    return qa.qa_splits(paths[:1], paths[1:])


def run_job(name, k, init, out, data_root, splits, settings, device, keep_models):
    benchmark = BENCHMARKS[name]
    config = replace(tasks.DEFAULTS[benchmark.defaults], seed=tasks.FinetuneConfig.seed + k,
                     max_train_examples=settings["max_train_examples"],
                     max_eval_examples=settings["max_eval_examples"])
    if settings["epochs"] is not None:
        config = replace(config, epochs=settings["epochs"])
    start_init = job_dir(out, "squad", k) / "best" if name == "bioasq" else init
    directory = job_dir(out, name, k)
    started = time.time()
    # a job stopped by Ctrl-C/SIGTERM continues where it stopped; one killed before its job.json is kept
    resume = (directory / "checkpoint.pt").is_file() or (directory / "result.json").is_file()
    result = tasks.finetune(benchmark.task, data_root / benchmark.paths[0], start_init, directory, config, device,
                            splits, resume)
    record = {"benchmark": name, "seed_index": k, "seed": config.seed, "device": device,
              "wall_seconds": round(time.time() - started, 1), "result": result}
    write_json_atomic(directory / "job.json", record)  # the job counts as done from here
    if not keep_models:  # a base model is ~420 MB; 35 of them would be ~15 GB
        for done in ([name] if name != "squad" else []) + (["squad"] if name == "bioasq" else []):
            shutil.rmtree(job_dir(out, done, k) / "best", ignore_errors=True)


def reproduce(init, out, seeds=5, names=TASK_CHOICES, device="cpu", epochs=None, max_train_examples=None,
              max_eval_examples=None, data_root=DATA_ROOT, keep_models=False):
    """Run the unfinished jobs, then write and return OUT/tables.md (also printed) and OUT/tables.json."""
    out, data_root, init = Path(out), Path(data_root), Path(init)
    if not data_root.is_dir():
        raise InputError(f"{data_root}: no such data folder (set --data-root or ELECTRAMED_DATA)")
    tasks.load_init(init)  # a bad model directory fails now, not after hours of other jobs
    settings = {"init": str(init.resolve()), "init_sha1": tasks.weights_digest(init),
                "data_root": str(data_root.resolve()), "epochs": epochs,
                "max_train_examples": max_train_examples, "max_eval_examples": max_eval_examples}
    check_settings(out, settings)
    jobs = [(name, k) for k in range(seeds) for name in expand(names)]
    done = [job for job in jobs if is_finished(out, *job)]
    for name, k in done:
        print(f"skip {name} seed {k}: finished ({job_dir(out, name, k) / 'job.json'})")
    print(f"{len(done)} of {len(jobs)} jobs already finished, {len(jobs) - len(done)} to run")
    splits = {name: load_splits(name, data_root)  # bad data fails now, not hours later
              for name in dict.fromkeys(name for name, k in jobs if (name, k) not in done)}
    setup_runtime(device)  # e.g. --device cuda without a GPU: refused before OUT holds anything
    if not (out / "reproduce.json").is_file():  # the inputs checked out: OUT's results are these settings' from now on
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "reproduce.json", settings)
    with tqdm(total=len(jobs), initial=len(done), unit="job", desc="reproduce", position=0, dynamic_ncols=True) as bar:
        for name, k in jobs:
            if (name, k) in done:
                continue
            bar.set_description(f"reproduce: {name} seed {k + 1}/{seeds}")
            run_job(name, k, init, out, data_root, splits[name], settings, device, keep_models)
            write_tables(out, seeds, names, settings)
            bar.update(1)
    text = write_tables(out, seeds, names, settings)
    print(text)
    return text


# ------------------------------------------------------------------------------- one benchmark, several seeds
def finetune_seeds(task, data_dir, init, out, config: tasks.FinetuneConfig, device_name="cpu", seeds=1, splits=None,
                   resume=False):
    """`train.py finetune --seeds N`: seeds config.seed, config.seed + 1, ... into OUT/seed_K/ (tasks.finetune), then
    OUT/summary.json (mean and sample std of dev and test P/R/F1) and OUT/summary.md (the paper's Table 7 / 8 layout,
    the paper's numbers beside ours; Table 9's for QA). With `resume`, finished seeds are kept and a stopped one
    continues."""
    data_dir, out = Path(data_dir), Path(out)
    if splits is None:
        splits = qa.qa_splits([data_dir]) if task == "qa" else benchmarks.task_splits(task, data_dir)
    results = [tasks.finetune(task, data_dir, init, out / f"seed_{k}", replace(config, seed=config.seed + k),
                              device_name, splits, resume) for k in range(seeds)]
    summary = {"task": task, "data": str(data_dir), "init": str(init), "seeds": [r["seed"] for r in results],
               "finetune": asdict(config)}
    quick = [f"--{key.replace('_', '-')} {getattr(config, key)}" for key in ("max_train_examples", "max_eval_examples")
             if getattr(config, key) is not None]  # said above the table, as reproduce's tables do
    quick = f"**QUICK LOOK, NOT THE BENCHMARK'S SCORES: {', '.join(quick)}**\n\n" if quick else ""
    if task == "qa":  # Table 9: SAcc/LAcc/MRR per BioASQ test batch (or SQuAD EM/F1)
        summary["test"] = qa.qa_summary(results)
        (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        (out / "summary.md").write_text(quick + qa.qa_table(summary["test"], seeds))
        return summary
    for split in ("dev", "test"):
        summary[split] = {k: dict(zip(("mean", "std"), metrics.mean_std([r[split][k] for r in results])))
                          for k in PRF}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "summary.md").write_text(quick + summary_table([r["test"] for r in results], task, data_dir.name))
    return summary


def summary_table(tests, task, dataset):
    """Paper Table 7 (NER) / Table 8 (RE) layout for one benchmark's test scores, the paper's ELECTRAMed beside."""
    paper = PAPER.get(dataset.lower())
    title = {"ner": "Table 7 (NER)", "re": "Table 8 (RE)"}.get(task, task)
    lines = [f"Test scores in %, {title} layout; ours: {over_seeds(len(tests))}.", "",
             *TABLE_HEAD, *prf_rows(dataset, paper, tests)[0]]
    if not paper:
        lines += ["", f"No paper number for the data folder {dataset!r} (the paper's: {', '.join(PAPER)})."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------- tables
def collect(out, seeds, name):
    return [job for k in range(seeds) if (job := finished_job(out, name, k)) is not None]


def header(seeds, settings):
    seed = tasks.FinetuneConfig.seed
    over = f"{over_seeds(seeds)} ({seed})" if seeds == 1 else f"{over_seeds(seeds)} (seed {seed} + k)"
    lines = ["# ELECTRAMed reproduction: the paper's Tables 7, 8 and 9", "",
             f"Model: `{settings['init']}`. Data: `{settings['data_root']}`. Test-set scores in %; ours: {over}; "
             "difference = ours − paper (ELECTRAMed, Miolo et al. 2021, mean of 5 seeds). Fine-tuning settings: the "
             "paper's Table 5."]
    limits = ("epochs", "max_train_examples", "max_eval_examples")
    quick = [f"--{key.replace('_', '-')} {settings[key]}" for key in limits if settings[key] is not None]
    if quick:
        lines += ["", f"**QUICK LOOK, NOT A REPRODUCTION: {', '.join(quick)}** (a reproduction uses the default "
                      "epochs — 3, SQuAD 2 — and every training and test example; --max-eval-examples N scores the "
                      "first N examples of each dev and test split, of each BioASQ test batch)."]
    return lines


def over_seeds(count):
    return "one seed" if count == 1 else f"mean ± sample std over {count} seeds"


def duration(seconds):
    """42 s, 3.4 min, 2.1 h: quick jobs do not read as 0.0 minutes, long ones not as thousands of seconds."""
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min" if seconds < 5400 else \
        f"{seconds / 3600:.1f} h"


def seeds_note(count, seeds):
    return "" if count == seeds else f" ({count} of {seeds} seeds)"


TABLE_HEAD = ("| Benchmark | Metrics | ELECTRAMed (paper) | ours | difference |", "|---|---|---|---|---|")


def prf_rows(cell, paper, tests, comparable=True):
    """The P, R and F rows of one benchmark (Tables 7 and 8): the paper's ELECTRAMed (`paper` in %, None when the paper
    has no number), ours as the mean ± sample std of `tests` (test scores, fractions; "—" before the first one), and
    ours − paper. Returns (Markdown lines, the same as a JSON row in fractions)."""
    lines, row = [], {"paper": {k: v / 100 for k, v in zip(PRF, paper)} if paper else None, "ours": {},
                      "difference": {}}
    for i, (letter, key) in enumerate(zip("PRF", PRF)):
        theirs, ours, difference = f"{paper[i]:.2f}" if paper else "—", "—", "—"
        if tests:
            mean, std = metrics.mean_std([test[key] for test in tests])
            row["ours"][key] = {"mean": mean, "std": std}
            ours = f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if len(tests) > 1 else "")
            if paper and comparable:
                row["difference"][key] = mean - paper[i] / 100
                difference = f"{100 * mean - paper[i]:+.2f}"
            elif paper:
                difference = "not comparable"
        lines.append(f"| {cell if i == 0 else ''} | {letter} | {theirs} | {ours} | {difference} |")
    return lines, row


def prf_table(out, seeds, names, footnotes):
    """Table 7 / 8: one block of P/R/F rows per benchmark, from the finished jobs: (Markdown lines, JSON rows)."""
    lines, rows = list(TABLE_HEAD), []
    for name in names:
        benchmark = BENCHMARKS[name]
        jobs = collect(out, seeds, name)
        cell = benchmark.name + (footnote_mark(footnotes, benchmark.footnote) if benchmark.footnote else "")
        block, row = prf_rows(cell + seeds_note(len(jobs), seeds), PAPER[benchmark.paper],
                              [job["result"]["test"] for job in jobs], benchmark.comparable)
        lines += block
        rows.append({"benchmark": benchmark.name, "seeds_finished": len(jobs), "comparable": benchmark.comparable,
                     **row})
    return lines, rows


def footnote_mark(footnotes, text):
    if text not in footnotes:
        footnotes.append(text)
    return f"[^{footnotes.index(text) + 1}]"


def qa_section(out, seeds, footnotes):
    """Table 9 through qa.qa_summary / qa.qa_table, and the SQuAD step's dev EM/F1 below it."""
    jobs, squad = collect(out, seeds, "bioasq"), collect(out, seeds, "squad")
    marks = "".join(footnote_mark(footnotes, BENCHMARKS[name].footnote) for name in ("bioasq", "squad"))
    summary = qa.qa_summary([job["result"] for job in jobs])
    lines = [f"## Table 9: QA, BioASQ 7b factoid{marks} (SACC, LACC, MRR per test batch)"
             f"{seeds_note(len(jobs), seeds)}", ""]
    lines += qa.qa_table(summary, len(jobs)).rstrip("\n").split("\n") if jobs else ["No finished BioASQ job yet."]
    dev = [job["result"]["dev"] for job in squad if job["result"].get("dev")]
    squad_dev = {key: dict(zip(("mean", "std"), metrics.mean_std([d[key] for d in dev]))) for key in ("em", "f1")} \
        if dev else {}
    if squad_dev:
        em, f1 = (squad_dev[key] for key in ("em", "f1"))
        spread = len(dev) > 1  # one seed has no sample std
        lines += ["", f"SQuAD v1.1 step: dev EM/F1 of the kept epoch (ExpMRC subset), {over_seeds(len(dev))}: "
                      f"EM {100 * em['mean']:.2f}" + (f" ± {100 * em['std']:.2f}" if spread else "") +
                      f", F1 {100 * f1['mean']:.2f}" + (f" ± {100 * f1['std']:.2f}" if spread else "")]
    paper = {batch: dict(zip(("sacc", "lacc", "mrr"), (v / 100 for v in values)))
             for batch, values in qa.PAPER_BIOASQ.items()}
    return lines, {"seeds_finished": len(jobs), "ours": summary, "paper": paper, "squad_dev": squad_dev}


def write_tables(out, seeds, names, settings):
    """OUT/tables.md and OUT/tables.json from the finished jobs (fractions in the JSON, % in the Markdown)."""
    lines, footnotes = header(seeds, settings), []
    tables = {"settings": settings, "seeds": seeds, "units": "fractions in [0, 1]"}
    for table, title in ((7, "Table 7: NER (entity-level, exact match)"), (8, "Table 8: RE (micro over the "
                                                                               "positive classes)")):
        selected = [name for name in names if BENCHMARKS[name].table == table]
        if selected:
            rows_md, tables[f"table{table}"] = prf_table(out, seeds, selected, footnotes)
            lines += ["", f"## {title}", ""] + rows_md
    if "bioasq" in names:
        qa_lines, tables["table9"] = qa_section(out, seeds, footnotes)
        lines += [""] + qa_lines
    wall = {name: [job["wall_seconds"] for job in collect(out, seeds, name)] for name in expand(names)}
    tables["wall_seconds"] = wall
    lines += ["", "Wall time per job (mean over the finished seeds): " + ", ".join(
        f"{name} {duration(sum(times) / len(times))}" for name, times in wall.items() if times)]
    if footnotes:
        lines += [""] + [f"[^{i}]: {text}" for i, text in enumerate(footnotes, 1)]
    tables["footnotes"] = footnotes
    text = "\n".join(lines) + "\n"
    write_text_atomic(out / "tables.md", text)
    write_json_atomic(out / "tables.json", tables)
    return text

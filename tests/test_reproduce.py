"""`train.py reproduce` end to end on a tiny model and a few examples per split, and its tables checked against the
paper's numbers typed in here from the paper (Tables 7, 8, 9), independently of reproduce.PAPER / PAPER_BIOASQ."""
import json
import re
import statistics

import pytest
import torch

import electramed as em
import reproduce
import tasks
import train

PAPER_TABLE_7_8 = {"NCBI-disease": (85.87, 89.29, 87.54), "BC5CDR": (88.76, 91.34, 90.03),
                   "JNLPBA": (69.33, 78.56, 73.65), "ChemProt": (75.47, 70.67, 72.94), "DDI": (80.07, 78.24, 79.13)}
PAPER_TABLE_9 = {"1": (44.62, 51.28, 47.95), "2": (46.40, 62.40, 53.16), "3": (37.93, 58.62, 46.62),
                 "4": (61.18, 82.35, 69.55), "5": (24.57, 44.00, 31.42)}
QUICK = ["--epochs", "1", "--max-train-examples", "6", "--max-eval-examples", "3"]


@pytest.fixture
def tiny_init(tmp_path, scivocab):
    torch.manual_seed(0)
    config = em.preset("tiny", vocab_size=len(scivocab.read_text().splitlines()), **em._special_ids(scivocab.parent))
    em.save_pretrained(em.ElectraForPretraining(config), tmp_path / "init", vocab_path=scivocab)
    return tmp_path / "init"


def rows(markdown, title):
    """{benchmark or batch: {metric letter: (paper, ours, difference)}} of the Markdown table under `title`."""
    block = markdown.split(title, 1)[1].split("\n## ", 1)[0]
    table, current = {}, None
    for line in block.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) != 5 or cells[1] in ("Metrics", "---"):
            continue
        current = re.sub(r"\[\^\d+\]|\s*\(.*\)$", "", cells[0]) or current
        table.setdefault(current, {})[cells[1]] = tuple(cells[2:])
    return table


def footnote(markdown, benchmark_cell):
    number = re.search(rf"\| {re.escape(benchmark_cell)}\[\^(\d+)\]", markdown).group(1)
    return re.search(rf"^\[\^{number}\]: (.*)$", markdown, re.M).group(1)


def test_ner_re_end_to_end_resumes_and_skips_finished_jobs(tmp_path, data_dir, tiny_init, monkeypatch, capsys):
    out = tmp_path / "out"
    argv = ["reproduce", "--init", str(tiny_init), "--out", str(out), "--seeds", "2", "--tasks", "chemprot,ncbi",
            "--data-root", str(data_dir), *QUICK]
    finetune, calls = tasks.finetune, []

    def stopped_in_third_job(*args, **kwargs):
        calls.append(args[4])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return finetune(*args, **kwargs)

    monkeypatch.setattr(tasks, "finetune", stopped_in_third_job)
    assert train.main(argv) == 130  # stopped in the third job: the two before it are kept
    monkeypatch.setattr(tasks, "finetune", finetune)
    capsys.readouterr()
    assert train.main(argv) == 0
    printed = capsys.readouterr().out
    assert "2 of 4 jobs already finished, 2 to run" in printed
    assert "skip ncbi seed 0: finished" in printed and "skip chemprot seed 0: finished" in printed

    markdown = (out / "tables.md").read_text()
    assert markdown in printed  # the tables are printed at the end
    assert "QUICK LOOK, NOT A REPRODUCTION: --epochs 1, --max-train-examples 6, --max-eval-examples 3" in markdown
    jobs = {name: [json.loads((out / "jobs" / name / f"seed_{k}" / "job.json").read_text()) for k in range(2)]
            for name in ("ncbi", "chemprot")}
    assert [job["seed"] for job in jobs["ncbi"]] == [12345, 12346]
    assert all(job["result"]["finetune"]["epochs"] == 1 and job["result"]["finetune"]["max_train_examples"] == 6
               for name in jobs for job in jobs[name])
    assert not (out / "jobs" / "ncbi" / "seed_0" / "best").exists()  # models removed once scored (no --keep-models)
    for title, name, benchmark in (("Table 7", "ncbi", "NCBI-disease"), ("Table 8", "chemprot", "ChemProt")):
        table = rows(markdown, f"## {title}")
        assert list(table) == [benchmark]
        assert list(table[benchmark]) == ["P", "R", "F"]
        for letter, key, paper in zip("PRF", ("precision", "recall", "f1"), PAPER_TABLE_7_8[benchmark]):
            scores = [100 * job["result"]["test"][key] for job in jobs[name]]
            theirs, ours, difference = table[benchmark][letter]
            assert theirs == f"{paper:.2f}"
            assert ours == f"{statistics.mean(scores):.2f} ± {statistics.stdev(scores):.2f}"
            expected = "not comparable" if name == "chemprot" else f"{statistics.mean(scores) - paper:+.2f}"
            assert difference == expected
    assert "NOT comparable with the paper's 72.94" in footnote(markdown, "ChemProt")
    assert "| NCBI-disease[^" not in markdown  # the paper's own data: no footnote
    tables = json.loads((out / "tables.json").read_text())
    assert tables["table8"][0]["comparable"] is False and tables["table8"][0]["difference"] == {}
    assert tables["table7"][0]["paper"]["f1"] == pytest.approx(0.8754)

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished job ran again")

    monkeypatch.setattr(tasks, "finetune", must_not_run)
    assert train.main(argv) == 0
    assert "4 of 4 jobs already finished, 0 to run" in capsys.readouterr().out
    assert train.main([*argv[:-len(QUICK)], "--epochs", "2"]) == 2  # other settings: refused, not mixed in
    assert "holds results made with other settings (epochs 1 -> 2" in capsys.readouterr().err
    weights = tiny_init / "discriminator" / "pytorch_model.bin"  # the same --init path, other weights: refused too
    state = torch.load(weights)
    state = {name: tensor + 1 if tensor.is_floating_point() else tensor for name, tensor in state.items()}
    torch.save(state, weights)
    assert train.main(argv) == 2
    assert "other settings (the weights at --init (another SHA-1: exported or pre-trained again since))" in \
        capsys.readouterr().err


def test_bioasq_runs_squad_first_and_reports_table_9(tmp_path, data_dir, tiny_init, capsys):
    out = tmp_path / "out"
    argv = ["reproduce", "--init", str(tiny_init), "--out", str(out), "--seeds", "1", "--tasks", "bioasq",
            "--data-root", str(data_dir), "--keep-models", "--epochs", "1", "--max-train-examples", "4",
            "--max-eval-examples", "2"]
    assert train.main(argv) == 0
    squad, bioasq = (json.loads((out / "jobs" / name / "seed_0" / "job.json").read_text()) for name in ("squad",
                                                                                                        "bioasq"))
    assert bioasq["result"]["init"] == str(out / "jobs" / "squad" / "seed_0" / "best")  # SQuAD -> BioASQ
    assert squad["result"]["finetune"]["learning_rate"] == 3e-5  # Table 5's QA columns
    assert bioasq["result"]["finetune"]["learning_rate"] == 5e-6
    assert set(bioasq["result"]["test"]["batches"]) == {"1", "2", "3", "4", "5"}  # two snippets of every batch
    markdown = (out / "tables.md").read_text()
    table = rows(markdown, "## Table 9")
    assert list(table) == ["1", "2", "3", "4", "5", "average"]
    for batch, paper in PAPER_TABLE_9.items():
        for letter, key, value in zip(("SACC", "LACC", "MRR"), ("sacc", "lacc", "mrr"), paper):
            ours = 100 * bioasq["result"]["test"]["batches"][batch][key]
            assert table[batch][letter] == (f"{value:.2f}", f"{ours:.2f}", f"{ours - value:+.2f}")  # one seed: no ±
    assert table["average"]["MRR"][0] == f"{statistics.mean(p[2] for p in PAPER_TABLE_9.values()):.2f}"
    notes = re.findall(r"^\[\^\d+\]: (.*)$", markdown, re.M)
    assert any("BioASQ-train-factoid-7b.json" in note for note in notes)
    assert any("DERIVED first 11 complete articles" in note for note in notes)
    assert "SQuAD v1.1 step: dev EM/F1 of the kept epoch (ExpMRC subset), one seed: EM " in markdown
    assert "ours: one seed (12345);" in markdown and "--max-eval-examples 2" in markdown
    section = markdown.split("## Table 9", 1)[1].splitlines()  # one seed: no ± anywhere, as in Tables 7 and 8
    assert not [line for line in section if "±" in line and (line.startswith("|") or line.startswith("SQuAD"))]
    assert train.main(argv) == 0
    assert "2 of 2 jobs already finished, 0 to run" in capsys.readouterr().out


def test_tables_of_every_benchmark_from_recorded_jobs(tmp_path):
    """Every footnote of a data difference, partial seeds marked, from job records written by hand (no training)."""
    scores = {"ncbi": (0.8, 0.9), "bc5cdr": (0.7, 0.75), "jnlpba": (0.6,), "chemprot": (0.5, 0.55), "ddi": (0.4, 0.5)}
    for name, values in scores.items():
        for k, value in enumerate(values):
            directory = reproduce.job_dir(tmp_path, name, k)
            directory.mkdir(parents=True)
            result = {"test": {"precision": value, "recall": value / 2, "f1": value / 3}}
            (directory / "job.json").write_text(json.dumps({"wall_seconds": 60.0 * (k + 1), "result": result}))
    settings = {"init": "m", "data_root": "d", "epochs": None, "max_train_examples": None, "max_eval_examples": None}
    names = ["ncbi", "bc5cdr", "jnlpba", "chemprot", "ddi"]
    markdown = reproduce.write_tables(tmp_path, 2, names, settings)
    assert "QUICK LOOK" not in markdown  # full settings: no quick-look note
    table7, table8 = rows(markdown, "## Table 7"), rows(markdown, "## Table 8")
    assert list(table7) == ["NCBI-disease", "BC5CDR", "JNLPBA"] and list(table8) == ["ChemProt", "DDI"]
    assert table7["NCBI-disease"]["P"] == ("85.87", "85.00 ± 7.07", "-0.87")
    assert table7["JNLPBA"]["R"] == ("78.56", "30.00", "-48.56")  # one seed: no std
    assert "| JNLPBA[^1] (1 of 2 seeds) |" in markdown
    assert table8["DDI"]["F"] == ("79.13", "15.00 ± 2.36", "-64.13")
    assert ("\nWall time per job (mean over the finished seeds): ncbi 1.5 min, bc5cdr 1.5 min, jnlpba 60 s, chemprot "
            "1.5 min, ddi 1.5 min\n") in markdown
    assert [reproduce.duration(s) for s in (2.4, 89, 90, 5399, 5400)] == ["2 s", "89 s", "1.5 min", "90.0 min", "1.5 h"]
    assert "16,807 sentences" in footnote(markdown, "JNLPBA") and "rebuilt from the original XML" in \
        footnote(markdown, "DDI")


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, data_dir, tiny_init, capsys):
    out = tmp_path / "out"
    assert train.main(["reproduce", "--init", str(tmp_path), "--out", str(out), "--tasks", "ncbi,squad"]) == 2
    assert "--tasks: 'ncbi,squad': choose from ncbi,bc5cdr,jnlpba,chemprot,ddi,bioasq" in capsys.readouterr().err
    assert train.main(["reproduce", "--init", str(tmp_path), "--out", str(out), "--data-root", str(data_dir)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "not a model directory" in error and error.count("\n") == 1
    assert not out.exists()
    # a --data-root one level too deep: the benchmark's folder is missing; no reproduce.json is left to hold those
    # settings, so the corrected command is not refused as "other settings"
    wrong_root = data_dir / "ner"
    assert train.main(["reproduce", "--init", str(tiny_init), "--out", str(out), "--data-root", str(wrong_root),
                       "--tasks", "ncbi", "--seeds", "1"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {wrong_root / 'ner/NCBI-disease'}: no such folder"
    assert not out.exists()
    if not torch.cuda.is_available():  # the device is checked before reproduce.json is written
        assert train.main(["reproduce", "--init", str(tiny_init), "--out", str(out), "--data-root", str(data_dir),
                           "--tasks", "ncbi", "--seeds", "1", "--device", "cuda"]) == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == "error: --device cuda: no CUDA device is visible " \
            "to torch"
        assert not out.exists()

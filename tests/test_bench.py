"""bench.py (speed comparisons with a peer, not the benchmark datasets) runs end to end at tiny size. Its figures are
the machine's and are never asserted; what is checked is that both sides ran and the report has every part."""
import re

import bench


def test_bench_finetune_runs_both_sides_and_profiles_them(capsys):
    bench.main(["finetune", "--preset", "tiny", "--vocab-size", "300", "--batch", "2", "--seq", "16", "--steps", "2",
                "--warmup", "1", "--rounds", "1", "--threads", "1", "--profile", "6"])
    report = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in report.splitlines()
            if line.startswith(("ours ", "transformers ")) and " / " not in line}
    # side, params, groups, step ms, tokens/s, peak RSS, RSS growth, then the two timed steps
    assert set(rows) == {"ours", "transformers"} and all(len(row) == 9 for row in rows.values())
    assert re.search(r"ours / transformers: tokens/s x\d+\.\d\d, peak RSS x\d+\.\d\d", report)
    profile = report.split("one profiled step")[1].splitlines()[2:]
    assert 6 <= len(profile) <= 12  # each side's top 6, their union
    matmul = next(line.split() for line in profile if line.split()[0] in ("aten::addmm", "aten::mm"))
    assert matmul[1] != "-" and matmul[2] != "-"  # a matrix product is among the top ops of both sides


def test_bench_pretrain_runs_both_sides(capsys):
    bench.main(["pretrain", "--preset", "tiny", "--vocab-size", "300", "--batch", "2", "--seq", "16", "--steps", "1",
                "--warmup", "1", "--rounds", "1", "--threads", "1"])
    assert re.search(r"ours / transformers: tokens/s x\d+\.\d\d, peak RSS x\d+\.\d\d", capsys.readouterr().out)

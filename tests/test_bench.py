"""bench.py (speed comparisons with a peer, not the benchmark datasets) runs end to end at tiny size. Its figures are
the machine's and are never asserted; what is checked is that both sides ran and the report has every part."""
import re

import pytest

import bench


@pytest.mark.slow
def test_bench_finetune_runs_both_sides_and_profiles_them(capsys):
    bench.main(["finetune", "--preset", "tiny", "--vocab-size", "300", "--batch", "2", "--seq", "16", "--steps", "2",
                "--warmup", "1", "--rounds", "1", "--threads", "1", "--profile", "6"])
    report = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in report.splitlines()
            if line.startswith(("ours ", "transformers ")) and " / " not in line}
    # side, params, groups, step ms, tokens/s, peak RSS, RSS growth, then the two timed steps
    assert set(rows) == {"ours", "transformers"} and all(len(row) == 9 for row in rows.values())
    assert re.search(r"ours / transformers: tokens/s x\d+\.\d\d, peak RSS x\d+\.\d\d", report)
    profile = [line.split() for line in report.split("one profiled step")[1].splitlines()[2:]]
    assert 6 <= len(profile) <= 12  # each side's top 6, their union
    # which ops rank top is the machine's (at this tiny size a matrix product was once outranked): only the layout is
    # checked: an op's name (some hold spaces: "autograd::engine::evaluate_function: MmBackward0"), then its time on
    # each side, "-" where it is not among that side's top
    assert all(len(row) >= 3 and {row[-2], row[-1]} != {"-"} for row in profile), profile
    assert all(float(time) >= 0 for row in profile for time in row[-2:] if time != "-")


@pytest.mark.parametrize("argv, said", [
    (["finetune", "--preset", "tiny", "--batch", "0"], "argument --batch: 0 is out of range: allowed a whole number"),
    (["pretrain", "--preset", "nope"], "argument --preset: invalid choice: 'nope'"),
    (["faults", "--steps", "0"], "argument --steps: 0 is out of range"),
    (["tokenizer", "--vocab", "/no/such/vocab.txt", "--text", "README.md"], "/no/such/vocab.txt: vocabulary file not"),
    (["prepare", "--vocab", "README.md", "--corpus", "README.md"], "README.md:"),
    (["pretrain", "--preset", "tiny", "--vocab-size", "104"], "argument --vocab-size: 104 is out of range")])
def test_bad_flags_and_files_are_one_line_and_exit_2(argv, said, capsys):
    try:
        code = bench.main(argv)
    except SystemExit as exit:  # argparse's own exit, with train.ArgumentParser's one line
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"error: {said}"), err


@pytest.mark.slow
def test_bench_pretrain_runs_both_sides(capsys):
    bench.main(["pretrain", "--preset", "tiny", "--vocab-size", "300", "--batch", "2", "--seq", "16", "--steps", "1",
                "--warmup", "1", "--rounds", "1", "--threads", "1"])
    assert re.search(r"ours / transformers: tokens/s x\d+\.\d\d, peak RSS x\d+\.\d\d", capsys.readouterr().out)


@pytest.mark.slow
def test_bench_faults_runs_real_steps_with_and_without_the_setting(capsys):
    bench.main(["faults", "--preset", "tiny", "--batch", "2", "--seq", "16", "--steps", "2", "--warmup", "1",
                "--threads", "1"])
    lines = capsys.readouterr().out.splitlines()
    pattern = r"minor page faults in 2 tiny steps \([\d,]+ per step\), kernel time [\d,]+ ms per step, step [\d,]+ ms$"
    assert [line.split()[0] for line in lines] == ["glibc", "keep_freed_memory"]
    assert all(re.search(pattern, line) for line in lines), lines


@pytest.mark.parametrize("content, said", [(b"ab\xed\xa0cd\n", "not UTF-8 text (byte 2"), (b"\n \n", "no text to tokenize")])
def test_bench_tokenizer_text_that_is_not_text(content, said, scivocab, tmp_path, capsys):
    (tmp_path / "text").write_bytes(content)
    assert bench.main(["tokenizer", "--vocab", str(scivocab), "--text", str(tmp_path / "text")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'text'}: {said}") and err.count("\n") == 1, err

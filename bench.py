"""Benchmarks: speed and memory of our code beside a peer, measured in the same run and reported as ratios.

    python bench.py tokenizer --vocab V --text F     # ours vs transformers' BertTokenizerLegacy vs the Rust tokenizer
    python bench.py pretrain --preset small --seq 128 --batch 8   # one full ELECTRA step, ours vs transformers' classes
    python bench.py prepare --vocab V --corpus DIR   # corpus -> shards, 1 and 2 processes vs tokenizers' encode_batch

Tests never assert timings; this file is where speed claims come from. The CPU here is noisy in bursts, so every
benchmark warms up, reports medians, and runs ours and the peer back to back with the same threads and allocator.
"""
import argparse
import sys


# ----------------------------------------------------------------------------------------------------------- tokenizer
def bench_tokenizer(args):
    raise NotImplementedError("bench tokenizer: not written yet")


# ------------------------------------------------------------------------------------------------------------ pretrain
def bench_pretrain(args):
    raise NotImplementedError("bench pretrain: not written yet")


# ------------------------------------------------------------------------------------------------------------- prepare
def bench_prepare(args):
    raise NotImplementedError("bench prepare: not written yet")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    tok = commands.add_parser("tokenizer", help="tokenizer throughput: lines/s and MB/s, with ratios")
    tok.add_argument("--vocab", required=True, help="WordPiece vocab.txt")
    tok.add_argument("--text", required=True, help="text file, one item per line")
    tok.add_argument("--repeat", type=int, default=3, help="timed passes per tokenizer (the median is reported)")
    tok.set_defaults(run=bench_tokenizer)

    pre = commands.add_parser("pretrain", help="one full pre-training step: tokens/s, peak RSS, GFLOP/s")
    pre.add_argument("--preset", default="small", help="model preset (tiny, small, base, large)")
    pre.add_argument("--seq", type=int, default=128, help="sequence length")
    pre.add_argument("--batch", type=int, default=8, help="batch size")
    pre.add_argument("--steps", type=int, default=10, help="timed steps (after warm-up); the median is reported")
    pre.add_argument("--device", default="cpu", help="cpu, cuda or xla")
    pre.set_defaults(run=bench_pretrain)

    prep = commands.add_parser("prepare", help="corpus -> shards throughput with 1 and 2 processes")
    prep.add_argument("--vocab", required=True, help="WordPiece vocab.txt")
    prep.add_argument("--corpus", required=True, nargs="+", help="corpus files or folders")
    prep.add_argument("--max-length", type=int, default=128, help="packed sequence length")
    prep.set_defaults(run=bench_prepare)

    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    sys.exit(main())

"""Tests for tasks.py (fine-tuning) on tiny models: seconds on a CPU.

References: transformers' ElectraFor{TokenClassification,SequenceClassification,QuestionAnswering} (the saved model
must load there with our logits, and theirs in ours); the learning rate of every parameter is re-derived from the
optimizer's first step (Adam without bias correction); windowing is checked on random long sentences.
"""
import importlib.util
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import electramed as em
import benchmarks
import data
import inference
import runtime
import tasks
from tokenizer import InputError

transformers = pytest.importorskip("transformers")
REPO = Path(__file__).resolve().parent.parent
VOCAB = 120
HF_CLASSES = {"ner": "ElectraForTokenClassification", "re": "ElectraForSequenceClassification",
              "qa": "ElectraForQuestionAnswering"}
LABELS = {"ner": ["O", "B-Disease", "I-Disease"], "re": ["CPR:3", "CPR:4", "false"], "qa": []}


def tiny(**overrides):
    return em.preset("tiny", vocab_size=VOCAB, cls_id=5, sep_id=6, mask_id=7, **overrides)


def write_vocab(path):
    tokens = [f"tok{i}" for i in range(VOCAB)]
    tokens[0], tokens[1], tokens[5], tokens[6], tokens[7] = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
    path.write_text("\n".join(tokens) + "\n")
    return path


def perturb(module, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))


def batch(seed=0, lengths=(12, 9, 4)):
    """Token ids, attention mask and token types: a pair of segments per row (types 0 then 1), as a QA window is."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    types = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, :length] = torch.randint(8, VOCAB, (length,), generator=generator)
        ids[row, 0], ids[row, length - 1] = 5, 6
        types[row, length // 2:length] = 1
    return ids, (ids != 0).long(), types


# ------------------------------------------------------------------------------------- transformers, both directions
@pytest.mark.parametrize("task", ["ner", "re", "qa"])
def test_transformers_loads_ours_with_our_logits(tmp_path, task):
    torch.manual_seed(0)
    config = tiny(embedding_size=48)  # with embeddings_project
    model = tasks.build_model(task, em.Encoder(config), config, LABELS[task]).eval()
    perturb(model)
    tasks.save_finetuned(model, tmp_path / "model", LABELS[task], write_vocab(tmp_path / "vocab.txt"),
                         tasks.FinetuneConfig())
    assert (tmp_path / "model" / "vocab.txt").is_file() and not (tmp_path / "model.tmp").exists()
    theirs, info = getattr(transformers, HF_CLASSES[task]).from_pretrained(
        tmp_path / "model", output_loading_info=True, attn_implementation="eager")
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    if task != "qa":
        assert theirs.config.id2label == dict(enumerate(LABELS[task])) and theirs.num_labels == len(LABELS[task])
    ids, mask, types = batch()
    with torch.no_grad():
        ours, out = model(ids, mask, types), theirs.eval()(ids, attention_mask=mask, token_type_ids=types)
    reference = torch.stack([out.start_logits, out.end_logits], -1) if task == "qa" else out.logits
    if task != "re":  # padded positions are meaningless; compare the real ones
        ours, reference = ours[mask.bool()], reference[mask.bool()]
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    # the head's loss is transformers' (the mean over labelled tokens; QA: the mean of the start and end losses): a
    # loss off by a constant factor would train the same under Adam, but it is what metrics.jsonl reports
    generator = torch.Generator().manual_seed(2)
    if task == "ner":  # a tag on some tokens (each word's first piece), -100 on the others and on padding
        labels = torch.randint(0, 3, ids.shape, generator=generator)
        labels[(torch.rand(ids.shape, generator=generator) < 0.3) | (mask == 0)] = -100
        targets = {"labels": labels}
    elif task == "re":
        targets = {"labels": torch.randint(0, 3, (len(ids),), generator=generator)}
    else:
        starts = (torch.rand(len(ids), generator=generator) * mask.sum(1)).long()
        targets = {"start_positions": starts, "end_positions": torch.minimum(starts + 2, mask.sum(1) - 1)}
    with torch.no_grad():
        loss = model.loss(model(ids, mask, types), targets)
        reference = theirs(ids, attention_mask=mask, token_type_ids=types, **targets).loss
    torch.testing.assert_close(loss, reference, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("task", ["ner", "re", "qa"])
def test_ours_loads_a_transformers_model_with_its_logits(tmp_path, task):
    torch.manual_seed(1)
    labels = LABELS[task] or ["LABEL_0", "LABEL_1"]
    hf_config = transformers.ElectraConfig(vocab_size=VOCAB, embedding_size=64, hidden_size=64, num_hidden_layers=2,
                                           num_attention_heads=2, intermediate_size=256,
                                           id2label=dict(enumerate(labels)), attn_implementation="eager")
    theirs = getattr(transformers, HF_CLASSES[task])(hf_config).eval()
    perturb(theirs, seed=1)
    theirs.save_pretrained(tmp_path)
    model, loaded_labels, loaded_task = tasks.load_finetuned(tmp_path)
    assert loaded_task == task and loaded_labels == LABELS[task]
    ids, mask, types = batch(seed=1)
    with torch.no_grad():
        ours, out = model.eval()(ids, mask, types), theirs(ids, attention_mask=mask, token_type_ids=types)
    reference = torch.stack([out.start_logits, out.end_logits], -1) if task == "qa" else out.logits
    if task != "re":
        ours, reference = ours[mask.bool()], reference[mask.bool()]
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


def test_not_a_model_directory_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not a model directory"):
        tasks.load_init(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    write_vocab(tmp_path / "vocab.txt")
    with pytest.raises(InputError, match="not an ELECTRA config"):
        tasks.load_init(tmp_path)


def test_init_from_an_mlm_run_is_its_generator_encoder(tmp_path, scivocab):
    """`pretrain --objective mlm` saves OUT/electramed-hf/generator/ only; --init OUT/electramed-hf fine-tunes it."""
    torch.manual_seed(0)
    model = em.ElectraForPretraining(em.preset("tiny", vocab_size=31090, objective="mlm",
                                               **em._special_ids(scivocab.parent)))
    em.save_pretrained(model, tmp_path / "electramed-hf", vocab_path=scivocab)
    assert sorted(p.name for p in (tmp_path / "electramed-hf").iterdir()) == ["generator"]
    encoder, config, vocab, _ = tasks.load_init(tmp_path / "electramed-hf")
    assert vocab == tmp_path / "electramed-hf" / "generator" / "vocab.txt" and config.objective == "mlm"
    assert config.hidden_size == em.preset("tiny").hidden_size  # the discriminator-sized network
    expected = model.generator.encoder.state_dict()
    assert expected.keys() == encoder.state_dict().keys()
    assert all(torch.equal(value, expected[key]) for key, value in encoder.state_dict().items())


def test_init_needs_only_the_discriminator(tmp_path, scivocab):
    """Fine-tuning starts from discriminator/: a generator/ cut short (or deleted to save space) does not matter."""
    torch.manual_seed(0)
    model = em.ElectraForPretraining(em.preset("tiny", vocab_size=31090, **em._special_ids(scivocab.parent)))
    em.save_pretrained(model, tmp_path / "electramed-hf", vocab_path=scivocab)
    weights = tmp_path / "electramed-hf" / "generator" / "pytorch_model.bin"
    weights.write_bytes(weights.read_bytes()[:1000])
    encoder, config, vocab, _ = tasks.load_init(tmp_path / "electramed-hf")
    assert vocab == tmp_path / "electramed-hf" / "discriminator" / "vocab.txt" and config.objective == "electra"
    expected = model.discriminator.encoder.state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in encoder.state_dict().items())
    (tmp_path / "electramed-hf" / "discriminator" / "pytorch_model.bin").write_bytes(b"")  # the one it needs
    with pytest.raises(InputError, match="discriminator/pytorch_model.bin: cannot be read as weights"):
        tasks.load_init(tmp_path / "electramed-hf")


# ---------------------------------------------------------------------------------------------- layer-wise decay
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_learning_rate_of_every_parameter(weight_decay):
    """One optimizer step with all gradients 1: Adam without bias correction moves each weight by
    lr * scale * (0.1 / (sqrt(0.001) + eps) + weight_decay * w). The scale, by name, as the official code:
    embeddings 0.8^4, layer 0 0.8^3, the top layer (1) 0.8^2 -- not 0.8 (google-research/electra #51) -- head 1."""
    torch.manual_seed(2)
    config = tiny(embedding_size=48)
    model = tasks.build_model("re", em.Encoder(config), config, LABELS["re"])
    groups = tasks.finetune_parameter_groups(model, 0.8, weight_decay)
    named = dict(model.named_parameters())
    assert sorted(n for g in groups for n in g["names"]) == sorted(named)  # every parameter exactly once
    expected_scale = {"encoder.embeddings.": 0.8 ** 4, "encoder.embeddings_project.": 0.8 ** 4,
                      "encoder.layers.0.": 0.8 ** 3, "encoder.layers.1.": 0.8 ** 2, "dense.": 1.0, "out_proj.": 1.0}
    before = {name: p.detach().clone() for name, p in named.items()}
    optimizer = tasks.AdamWeightDecay(groups, eps=1e-6)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    lr = 1e-3
    optimizer.step(torch.tensor(lr))
    for name, p in named.items():
        scale = next(s for prefix, s in expected_scale.items() if name.startswith(prefix))
        decays = not (name.endswith(".bias") or "norm" in name)  # ELECTRA: not LayerNorm, not biases
        update = 0.1 / (math.sqrt(0.001) + 1e-6) + (weight_decay * before[name] if decays else 0.0)
        torch.testing.assert_close(before[name] - p.detach(), lr * scale * update * torch.ones_like(p),
                                   atol=3e-7, rtol=1e-4, msg=name)  # float32 rounding of w


# ---------------------------------------------------------------------------------------------------- NER windows
class PieceTokenizer:
    """A stand-in tokenizer: word "wN" has N pieces, ids 8.. ."""
    cls_id, sep_id, unk_id = 5, 6, 1

    def tokenize_ids(self, word, specials=True):
        return list(range(8, 8 + int(word[1:])))


def test_windows_predict_every_word_exactly_once():
    rng = random.Random(0)
    for trial in range(300):
        max_length = rng.randint(3, 12)
        words = [f"w{rng.randint(1, max_length + 2)}" for _ in range(rng.randint(1, 60))]  # some longer than a window
        tags = [rng.choice(["O", "B-X", "I-X"]) for _ in words]
        features = benchmarks.ner_features([(words, tags), (["w1"], ["O"])], PieceTokenizer(), ["O", "B-X", "I-X"],
                                           max_length)
        predicted = sorted(word for f in features if f["example_index"] == 0 for _, word in f["words"])
        assert predicted == list(range(len(words)))
        for f in features:
            assert len(f["input_ids"]) <= max_length and len(f["labels"]) == len(f["input_ids"])
            assert f["input_ids"][0] == 5 and f["input_ids"][-1] == 6
            for position, word in f["words"]:  # the label sits on the word's first piece
                assert f["labels"][position] == ["O", "B-X", "I-X"].index(tags[word]) if f["example_index"] == 0 \
                    else True
            assert sum(label != -100 for label in f["labels"]) == len(f["words"])
        # decoding: a logit that points at the gold tag at each labelled position gives the gold tags back, 1:1
        logits = [torch.nn.functional.one_hot(torch.tensor([max(t, 0) for t in f["labels"]]), 3).float()
                  for f in features]
        decoded = tasks.decode_tags([(words, tags), (["w1"], ["O"])], features, logits, ["O", "B-X", "I-X"])
        assert decoded == [tags, ["O"]]
    # a window fills max_length exactly; an empty sentence has none
    full = benchmarks.ner_features([(["w1"] * 126, ["O"] * 126)], PieceTokenizer(), ["O"], 128)
    assert [len(f["input_ids"]) for f in full] == [128]
    assert benchmarks.ner_features([([], [])], PieceTokenizer(), ["O"], 128) == []


def test_a_word_is_predicted_from_the_window_where_it_has_most_context():
    lengths = [1] * 10
    windows = benchmarks.word_windows(lengths, 6)
    assert windows == [(0, 6), (3, 9), (6, 10)]  # stride 3 pieces, overlap half
    # the stride is budget // 2 whole pieces (odd budgets round down), and at least one word
    assert benchmarks.word_windows(lengths, 5) == [(0, 5), (2, 7), (4, 9), (6, 10)]
    assert benchmarks.word_windows([1] * 5, 3) == [(0, 3), (1, 4), (2, 5)]
    owner = benchmarks.best_windows(lengths, windows, 6)
    assert owner == [0, 0, 0, 0, 0, 1, 1, 1, 2, 2]  # min(left, right) context: word 4 ties (1 vs 1), earlier wins


def test_tagging_loss_is_the_mean_over_labelled_tokens_and_0_without_any():
    config = tiny()
    model = tasks.build_model("ner", em.Encoder(config), config, LABELS["ner"])
    logits, labels = torch.randn(2, 5, 3), torch.full((2, 5), -100)
    labels[1, 2] = 1
    expected = torch.nn.functional.cross_entropy(logits[1, 2][None], labels[1, 2][None])
    torch.testing.assert_close(model.loss(logits, {"labels": labels}), expected)
    # a batch whose words are all predicted from other windows trains nothing (a 0 loss, not 0 / 0)
    assert model.loss(logits, {"labels": torch.full((2, 5), -100)}).item() == 0.0


def test_padding_to_the_longest_equals_padding_to_max_length():
    """cpu/cuda batches pad to their longest sequence, xla to max_length: the real positions get the same logits."""
    torch.manual_seed(3)
    config = tiny()
    model = tasks.build_model("ner", em.Encoder(config), config, LABELS["ner"]).eval()
    features = [{"input_ids": [5] + [9 + i] * n + [6], "labels": [-100] * (n + 2)} for i, n in enumerate((3, 9, 1))]
    short = tasks.predict_logits(model, features, 2, torch.device("cpu"))
    padded = tasks.predict_logits(model, features, 2, torch.device("cpu"), pad_to=32)
    assert [len(s) for s in short] == [5, 11, 3]
    for a, b in zip(short, padded):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    batch = tasks.collate(features, pad_to=32)
    assert batch["input_ids"].shape == (3, 32) and batch["attention_mask"].sum().item() == 5 + 11 + 3
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()


def test_re_scores_leave_out_each_label_sets_negative_class():
    """BLUE's RE scores are over the positive classes: ChemProt's "false" and DDI's "DDI-false" are left out; SciBERT's
    ChemProt (13 labels, all relations) has none to leave out."""
    assert tasks.negative_label(["CPR:3", "CPR:4", "CPR:5", "CPR:6", "CPR:9", "false"]) == {"false"}
    assert tasks.negative_label(["DDI-advise", "DDI-effect", "DDI-false", "DDI-int", "DDI-mechanism"]) == {"DDI-false"}
    assert tasks.negative_label(["ACTIVATOR", "INHIBITOR", "SUBSTRATE"]) == set()


def test_re_features_are_cls_text_sep_cut_to_max_length(scivocab):
    from tokenizer import WordPieceTokenizer
    tokenizer = WordPieceTokenizer(scivocab)
    text = "Binding of @CHEMICAL$ to @GENE$ " * 20
    features = benchmarks.re_features([("1", text, "CPR:4"), ("2", "short @GENE$ text", "false")], tokenizer,
                                      ["CPR:4", "false"], 16)
    assert features[0]["input_ids"] == [tokenizer.cls_id] + tokenizer.tokenize_ids(text)[:14] + [tokenizer.sep_id]
    assert features[1]["input_ids"] == tokenizer.encode("short @GENE$ text").ids and features[1]["labels"] == 1


# ---------------------------------------------------------------------------------------------------- real data
def ncbi_sentences(data_dir, count=20):
    return [s for s in benchmarks.read_ner(data_dir / "ner" / "NCBI-disease" / "train.txt")
            if any(tag != "O" for tag in s[1])][:count]


def write_ner(path, sentences):
    path.write_text("\n\n".join("\n".join(f"{w} {t}" for w, t in zip(*s)) for s in sentences) + "\n")


def test_tiny_model_overfits_20_ncbi_sentences(tmp_path, data_dir, tiny_init):
    sentences = ncbi_sentences(data_dir)
    splits = {"train": sentences, "dev": sentences, "test": sentences}
    # memorising, not generalising: a high learning rate, no dropout, 40 steps
    config = tasks.FinetuneConfig(learning_rate=2e-3, epochs=20, batch_size=10, warmup_proportion=0.05, dropout=0.0,
                                  seed=1)
    result = tasks.finetune("ner", data_dir / "ner" / "NCBI-disease", tiny_init, tmp_path / "out", config,
                            splits=splits)
    assert result["test"]["f1"] > 0.9, result["test"]
    lines = (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 20
    assert max(json.loads(line)["dev_f1"] for line in lines) == pytest.approx(result["dev"]["f1"], abs=1e-6)


def test_the_warm_up_is_a_share_of_the_steps_not_rounded_down(tmp_path, data_dir, tiny_init, monkeypatch):
    """optimization.py: warmup_steps = num_train_steps * warmup_proportion, a float. 9 steps x 0.1 = 0.9 steps: step 0
    at lr 0, then the decay alone (rounded down to 0 steps, step 0 would train at the full learning rate)."""
    sentences = ncbi_sentences(data_dir)[:5]
    config = tasks.FinetuneConfig(learning_rate=1e-3, epochs=3, batch_size=2, seed=1)
    rates = []
    def recorded(*args):
        rates.append(runtime.linear_schedule(*args))
        return rates[-1]
    monkeypatch.setattr(tasks, "linear_schedule", recorded)
    tasks.finetune("ner", data_dir / "ner" / "NCBI-disease", tiny_init, tmp_path / "out", config,
                   splits={"train": sentences, "dev": sentences, "test": sentences})
    assert rates == pytest.approx([1e-3 * (1 - step / 9) * min(1.0, step / 0.9) for step in range(9)])
    assert rates[0] == 0.0


def test_ctrl_c_saves_a_checkpoint_and_resume_equals_an_uninterrupted_run(tmp_path, data_dir, tiny_init, monkeypatch):
    """SIGINT in the middle of epoch 2: the step ends, OUT/checkpoint.pt is written, exit 130; --resume then gives
    the uninterrupted run's log, best model and scores exactly (batch order and dropout depend on seed and step)."""
    import os
    import signal

    sentences = ncbi_sentences(data_dir, 24)
    splits = {"train": sentences[:16], "dev": sentences[16:], "test": sentences[16:]}
    config = tasks.FinetuneConfig(learning_rate=1e-3, epochs=3, batch_size=4, seed=3)  # 4 steps an epoch
    reference = tasks.finetune("ner", "NCBI-disease", tiny_init, tmp_path / "whole", config, splits=splits)
    real_step, calls = tasks.train_step, []

    def interrupted_step(*args):
        calls.append(1)
        if len(calls) == 6:  # the second step of epoch 2
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(*args)

    monkeypatch.setattr(tasks, "train_step", interrupted_step)
    with pytest.raises(SystemExit) as stopped:
        tasks.finetune("ner", "NCBI-disease", tiny_init, tmp_path / "cut", config, splits=splits)
    assert stopped.value.code == 130 and len(calls) == 6
    assert (tmp_path / "cut" / "checkpoint.pt").is_file() and not (tmp_path / "cut" / "result.json").exists()
    monkeypatch.setattr(tasks, "train_step", real_step)
    saved = (tmp_path / "cut" / "checkpoint.pt").read_bytes()
    # the same command without --resume would start again and throw the stopped run's steps away: refused
    with pytest.raises(InputError, match=r"cut: holds a stopped run \(checkpoint.pt\); pass --resume to continue it, "):
        tasks.finetune("ner", "NCBI-disease", tiny_init, tmp_path / "cut", config, splits=splits)
    # --resume with another setting names it
    with pytest.raises(InputError, match=r"checkpoint.pt: written with other settings \(learning_rate 0.001 -> 0.002\)"):
        tasks.finetune("ner", "NCBI-disease", tiny_init, tmp_path / "cut", replace(config, learning_rate=2e-3),
                       splits=splits, resume=True)
    # ... and so does --resume with other data or another model: the stopped run's config.json names both
    with pytest.raises(InputError, match=r"checkpoint.pt: written with other settings \(data \S+/NCBI-disease -> "
                                         r"\S+/BC5CDR\)"):
        tasks.finetune("ner", "BC5CDR", tiny_init, tmp_path / "cut", config, splits=splits, resume=True)
    with pytest.raises(InputError, match=r"written with other settings \(init \S+/init -> \S+/whole/best\)"):
        tasks.finetune("ner", "NCBI-disease", tmp_path / "whole" / "best", tmp_path / "cut", config, splits=splits,
                       resume=True)
    # ... and so does the same --init path holding other weights (an export or pretrain --resume wrote there since)
    digest = tasks.weights_digest(tiny_init)
    monkeypatch.setattr(tasks, "weights_digest", lambda init: "other")
    with pytest.raises(InputError, match=r"written with other settings \(the weights at --init \(another SHA-1\)\)"):
        tasks.finetune("ner", "NCBI-disease", tiny_init, tmp_path / "cut", config, splits=splits, resume=True)
    monkeypatch.undo()
    assert (tmp_path / "cut" / "checkpoint.pt").read_bytes() == saved
    saved_config = json.loads((tmp_path / "cut" / "config.json").read_text())
    assert saved_config["finetune"]["learning_rate"] == 1e-3 and saved_config["init_sha1"] == digest  # kept
    resumed = tasks.finetune("ner", "NCBI-disease", tiny_init, tmp_path / "cut", config, splits=splits, resume=True)
    assert resumed["test"] == reference["test"] and resumed["dev"] == reference["dev"]
    assert ((tmp_path / "cut" / "metrics.jsonl").read_text() == (tmp_path / "whole" / "metrics.jsonl").read_text())
    ours, theirs = (torch.load(tmp_path / run / "best" / "pytorch_model.bin") for run in ("cut", "whole"))
    assert all(torch.equal(ours[key], theirs[key]) for key in theirs)
    assert not (tmp_path / "cut" / "checkpoint.pt").exists()
    # finished: --resume returns its result (the data is not read again); without it, or with other settings, refused
    assert tasks.finetune("ner", "NCBI-disease", tiny_init, tmp_path / "cut", config, resume=True) == resumed
    data_dir = Path("NCBI-disease").resolve()  # ... from any working folder: the run recorded absolute paths
    monkeypatch.chdir(tmp_path / "whole")
    assert tasks.finetune("ner", data_dir, tiny_init, tmp_path / "cut", config, resume=True) == resumed
    monkeypatch.undo()
    with pytest.raises(InputError, match=r"cut: holds a finished run \(result.json\); pass --resume to keep it, or "):
        tasks.finetune("ner", "NCBI-disease", tiny_init, tmp_path / "cut", config, splits=splits)
    with pytest.raises(InputError, match=r"result.json: finished with other settings \(data \S+/NCBI-disease -> "
                                         r"\S+/BC5CDR, epochs 3 -> 4\); pass another --out$"):
        tasks.finetune("ner", "BC5CDR", tiny_init, tmp_path / "cut", replace(config, epochs=4), resume=True)
    monkeypatch.setattr(tasks, "weights_digest", lambda init: "other")
    with pytest.raises(InputError, match=r"result.json: finished with other settings \(the weights at --init "):
        tasks.finetune("ner", "NCBI-disease", tiny_init, tmp_path / "cut", config, resume=True)
    monkeypatch.undo()
    tiny_init.rename(tmp_path / "moved")  # no weights at --init any more: not "other weights", the run is kept
    assert tasks.finetune("ner", "NCBI-disease", tiny_init, tmp_path / "cut", config, resume=True) == resumed


def test_weights_digest_is_the_fine_tuned_networks(tmp_path, tiny_init):
    """The SHA-1 of discriminator/'s weights: it changes when they do, not when the generator's do."""
    init = tmp_path / "copy"
    shutil.copytree(tiny_init, init)
    digest = tasks.weights_digest(init)
    assert digest == data.file_digest(init / "discriminator" / "pytorch_model.bin")
    (init / "generator" / "pytorch_model.bin").write_bytes(b"")
    assert tasks.weights_digest(init) == digest
    state = torch.load(init / "discriminator" / "pytorch_model.bin")
    name = next(iter(state))
    state[name] = state[name] + 1
    torch.save(state, init / "discriminator" / "pytorch_model.bin")
    assert tasks.weights_digest(init) != digest


def test_a_signal_during_the_dev_evaluation_saves_the_whole_epoch_and_resume_equals_an_uninterrupted_run(
        tmp_path, data_dir, tiny_init, monkeypatch):
    """SIGTERM while epoch 1's dev set is scored: the evaluation ends, its line and best/ are written, then
    OUT/checkpoint.pt at the start of epoch 2, exit 143; --resume gives the uninterrupted run's log and scores."""
    import os
    import signal

    sentences = ncbi_sentences(data_dir, 24)
    splits = {"train": sentences[:16], "dev": sentences[16:], "test": sentences[16:]}
    config = tasks.FinetuneConfig(learning_rate=1e-3, epochs=2, batch_size=4, seed=3)
    reference = tasks.finetune("ner", "NCBI-disease", tiny_init, tmp_path / "whole", config, splits=splits)
    real_evaluate = tasks.evaluate

    def interrupted_evaluate(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(tasks, "evaluate", interrupted_evaluate)
    with pytest.raises(SystemExit) as stopped:
        tasks.finetune("ner", "NCBI-disease", tiny_init, tmp_path / "cut", config, splits=splits)
    assert stopped.value.code == 143 and (tmp_path / "cut" / "checkpoint.pt").is_file()
    assert len((tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()) == 1  # epoch 1, scored
    monkeypatch.setattr(tasks, "evaluate", real_evaluate)
    resumed = tasks.finetune("ner", "NCBI-disease", tiny_init, tmp_path / "cut", config, splits=splits, resume=True)
    assert resumed["test"] == reference["test"] and resumed["dev"] == reference["dev"]
    assert (tmp_path / "cut" / "metrics.jsonl").read_text() == (tmp_path / "whole" / "metrics.jsonl").read_text()
    # a signal while the test set is scored (the last evaluation): the run finishes, then it stops (reproduce too)
    calls = []

    def interrupted_test(*args, **kwargs):
        calls.append(1)
        if len(calls) == config.epochs + 1:
            os.kill(os.getpid(), signal.SIGINT)
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(tasks, "evaluate", interrupted_test)
    with pytest.raises(SystemExit) as stopped:
        tasks.finetune("ner", "NCBI-disease", tiny_init, tmp_path / "last", config, splits=splits)
    assert stopped.value.code == 130 and len(calls) == config.epochs + 1
    assert json.loads((tmp_path / "last" / "result.json").read_text())["test"] == reference["test"]
    assert not (tmp_path / "last" / "checkpoint.pt").exists()


# ---------------------------------------------------------------------------------------------------- the CLI
def small_re_folder(data_dir, folder):
    """Train/dev/test from the first rows of ChemProt's BLUE dev file (the only BLUE ChemProt file here)."""
    lines = (data_dir / "re" / "chemprot" / "dev.csv").read_text(encoding="utf-8-sig").splitlines()
    folder.mkdir()
    rows = [lines[0]] + [line for line in lines[1:] if not line.endswith("false")][:30] + \
        [line for line in lines[1:] if line.endswith("false")][:10]
    for name in ("train", "dev", "test"):
        (folder / f"{name}.tsv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.mark.parametrize("task", ["ner", "re"])
def test_cli_finetune_evaluate_predict(cli, tmp_path, data_dir, tiny_init, task):
    if task == "ner":
        folder = tmp_path / "NCBI-disease"
        folder.mkdir()
        sentences = ncbi_sentences(data_dir, 30)
        for name in ("train", "dev", "test"):
            write_ner(folder / f"{name}.txt", sentences)
        test_file = folder / "test.txt"
    else:
        folder = small_re_folder(data_dir, tmp_path / "chemprot")
        test_file = folder / "test.tsv"
    out = tmp_path / "run"
    result = cli("finetune", "--task", task, "--data", folder, "--init", tiny_init, "--out", out, "--epochs", 2,
                     "--max-train-examples", 16, "--batch-size", 8, "--seeds", 2)
    assert result.returncode == 0, result.stderr[-2000:]
    for seed in (0, 1):
        run = out / f"seed_{seed}"
        assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
        saved = json.loads((run / "result.json").read_text())
        assert {"precision", "recall", "f1", "table"} <= set(saved["test"]) and saved["labels"]
    dev_f1 = [json.loads((out / f"seed_{seed}" / "result.json").read_text())["dev"]["f1"] for seed in (0, 1)]
    assert result.stderr.count("note: dev F1 was 0 in every epoch") == dev_f1.count(0)  # see the test below
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [12345, 12346]
    table = (out / "summary.md").read_text()
    assert ("| NCBI-disease | P | 85.87 |" in table) if task == "ner" else ("| chemprot | P | 75.47 |" in table)
    assert table.startswith("**QUICK LOOK, NOT THE BENCHMARK'S SCORES: --max-train-examples 16**\n\n")
    assert "layout; ours: mean ± sample std over 2 seeds.\n" in table
    model = getattr(transformers, HF_CLASSES[task]).from_pretrained(out / "seed_0" / "best")
    saved_config = json.loads((out / "seed_0" / "best" / "config.json").read_text())
    assert saved_config.get("electramed_word_split") == ("punctuation" if task == "ner" else None)  # NCBI's words
    assert list(model.config.id2label.values()) == saved["labels"]

    result = cli("evaluate", "--model", out / "seed_0" / "best", "--data", test_file)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "precision" in result.stdout and ("Disease" in result.stdout or "CPR:" in result.stdout)
    # a blank line, Windows line ends, and characters str.splitlines would cut a line at (\f, U+2028): line for line
    text = "Occasional missense mutations in ATM were also found in tumour DNA .\r\n\r\nSecond\f line \u2028 ."
    result = cli("predict", "--model", out / "seed_0" / "best", stdin=text)
    assert result.returncode == 0, result.stderr[-2000:]
    printed = result.stdout.rstrip("\n").split("\n")
    text = text.replace("\r\n", "\n")
    assert len(printed) == 3
    assert printed[1] == ""  # a blank line stays blank
    if task == "re":  # label TAB line
        assert [line.split("\t", 1) for line in printed[::2]] == \
            [[line.split("\t")[0], original] for line, original in zip(printed[::2], text.split("\n")[::2])]
        assert all(line.split("\t")[0] in saved["labels"] for line in printed[::2])
    else:  # the line itself, entities wrapped as [[entity]]/Disease
        assert [re.sub(r"\[\[(.*?)\]\]/Disease", r"\1", line) for line in printed] == text.split("\n")


def test_a_run_whose_dev_f1_stays_0_says_why(cli, tmp_path, data_dir, tiny_init):
    """What a new user sees fine-tuning the quick start's tiny model at Table 5's learning rate: dev F1 0 in every
    epoch, then a note on the learning rate. Made certain here with a dev set that has no entity to find."""
    folder = tmp_path / "ner"
    folder.mkdir()
    sentences = ncbi_sentences(data_dir, 8)
    write_ner(folder / "train.txt", sentences)
    for name in ("dev", "test"):
        write_ner(folder / f"{name}.txt", [(words, ["O"] * len(words)) for words, _ in sentences])
    result = cli("finetune", "--task", "ner", "--data", folder, "--init", tiny_init, "--out", tmp_path / "run",
                 "--epochs", 2, "--batch-size", 8)
    assert result.returncode == 0, result.stderr[-2000:]
    note = [line for line in result.stderr.splitlines() if line.startswith("note: ")]
    assert len(note) == 1 and note[0].startswith("note: dev F1 was 0 in every epoch at learning rate 5e-05 (")
    assert "a small model needs a higher one (tiny: finetune --learning-rate 1e-3 --epochs 10" in note[0], note
    # at the rate it suggests, the note does not suggest it again
    result = cli("finetune", "--task", "ner", "--data", folder, "--init", tiny_init, "--out", tmp_path / "run-1e-3",
                 "--epochs", 1, "--batch-size", 8, "--learning-rate", 1e-3)
    note = [line for line in result.stderr.splitlines() if line.startswith("note: ")]
    assert note == ["note: dev F1 was 0 in every epoch at learning rate 0.001 (no entity, relation or answer found)"]


def test_cli_bad_inputs_are_one_line_and_exit_2(cli, tmp_path, data_dir, tiny_init):
    folder = tmp_path / "ner"
    folder.mkdir()
    sentences = ncbi_sentences(data_dir, 5)
    for name in ("train", "dev", "test"):
        write_ner(folder / f"{name}.txt", sentences)
    out = tmp_path / "out"
    cases = [("finetune", "--task", "ner", "--data", folder, "--init", tmp_path, "--out", out),  # not a model
             ("finetune", "--task", "ner", "--data", tmp_path / "missing", "--init", tiny_init, "--out", out)]
    (folder / "empty.txt").write_text("")
    other = tmp_path / "other.txt"
    write_ner(other, [(["Aspirin"], ["B-Chemical"])])
    model_dir = tmp_path / "model"
    config = em.read_hf_config(tiny_init / "discriminator")[0]
    tasks.save_finetuned(tasks.build_model("ner", em.Encoder(config), config, ["O", "B-Disease", "I-Disease"]),
                         model_dir, ["O", "B-Disease", "I-Disease"], tiny_init / "discriminator" / "vocab.txt",
                         tasks.FinetuneConfig())
    cases += [("evaluate", "--model", model_dir, "--data", other),  # a label the model doesn't have
              ("evaluate", "--model", model_dir, "--data", folder / "empty.txt"),
              ("evaluate", "--model", tiny_init, "--data", folder / "test.txt")]  # pre-trained, not fine-tuned
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Caf\xe9 au lait .".encode("latin-1"))
    cases.append(("predict", "--model", model_dir, latin1))
    # a run folder where its model goes (a new user's first try): the error names the model folder inside it
    pretrain_run, finetune_run = tmp_path / "pretrain-run", tmp_path / "finetune-run"
    shutil.copytree(tiny_init, pretrain_run / "electramed-hf")
    shutil.copytree(model_dir, finetune_run / "seed_0" / "best")
    for run in (pretrain_run, finetune_run):  # beside the model, as pretrain and finetune write it: a run's config
        (run / "config.json").write_text(json.dumps({"task": "ner", "finetune": {}}))
    inside = {pretrain_run: pretrain_run / "electramed-hf", finetune_run: finetune_run / "seed_0" / "best"}
    cases += [("finetune", "--task", "ner", "--data", folder, "--init", pretrain_run, "--out", out),
              ("evaluate", "--model", finetune_run, "--data", folder / "test.txt"),
              ("predict", "--model", finetune_run, folder / "test.txt")]
    # each with the line it gives: what is wrong, and where
    broken_config, cut_weights, broken_init = tmp_path / "broken-config", tmp_path / "cut-weights", tmp_path / "bad-init"
    empty_weights = tmp_path / "empty-weights"
    for copy in (broken_config, cut_weights, empty_weights):
        shutil.copytree(model_dir, copy)
    shutil.copytree(tiny_init, broken_init)
    for config_file in (broken_config / "config.json", broken_init / "discriminator" / "config.json"):
        config_file.write_text('{"model_type": "electra",\n bad')
    weights = (cut_weights / "pytorch_model.bin").read_bytes()
    (cut_weights / "pytorch_model.bin").write_bytes(weights[:len(weights) // 2])  # a copy cut short
    (empty_weights / "pytorch_model.bin").write_bytes(b"")  # a copy that never started
    stray_weights, list_weights, other_vocab, bad_windows = (tmp_path / name for name in (
        "stray-weights", "list-weights", "other-vocab", "bad-windows"))
    for copy in (stray_weights, list_weights, other_vocab, bad_windows):
        shutil.copytree(model_dir, copy)
    (stray_weights / "pytorch_model.bin").write_text("hello\n")
    torch.save([1, 2], list_weights / "pytorch_model.bin")
    with open(other_vocab / "vocab.txt", "a") as vocab:  # one word more than the embeddings have rows
        vocab.write("zzz-one-more\n")
    hf_config = json.loads((bad_windows / "config.json").read_text())
    (bad_windows / "config.json").write_text(json.dumps({**hf_config, "electramed_windows": {"max_length": "abc"}}))
    no_discriminator, big_vocab_init, no_disc_config = (tmp_path / name for name in (
        "no-discriminator", "big-vocab-init", "no-disc-config"))
    for copy in (no_discriminator, big_vocab_init, no_disc_config):
        shutil.copytree(tiny_init, copy)
    shutil.rmtree(no_discriminator / "discriminator")  # the ELECTRA run's generator is left: not fine-tuned
    shutil.copyfile(other_vocab / "vocab.txt", big_vocab_init / "discriminator" / "vocab.txt")
    (no_disc_config / "discriminator" / "config.json").unlink()
    short = replace(config, max_position_embeddings=64)  # as a transformers ELECTRA may have
    short_model, short_init = tmp_path / "short-model", tmp_path / "short-init"
    tasks.save_finetuned(tasks.build_model("ner", em.Encoder(short), short, ["O", "B-Disease", "I-Disease"]),
                         short_model, ["O", "B-Disease", "I-Disease"], tiny_init / "discriminator" / "vocab.txt",
                         tasks.FinetuneConfig(max_length=64))
    em.save_hf(em.Discriminator(short), short, "ElectraForPreTraining", short_init,
               tiny_init / "discriminator" / "vocab.txt")
    ner = ("finetune", "--task", "ner", "--data", folder)
    seeded, single = tmp_path / "seeded", tmp_path / "single"
    (seeded / "seed_0").mkdir(parents=True)
    single.mkdir()
    (single / "result.json").write_text("{}")
    only_o, only_false = tmp_path / "only-o", small_re_folder(data_dir, tmp_path / "only-false")
    only_o.mkdir()
    for name in ("train", "dev", "test"):  # a train split with nothing to learn: every tag O, every relation
        nothing = name == "train"  # "false" (dev and test keep theirs: the train split is named, not a dev line)
        write_ner(only_o / f"{name}.txt", [(words, ["O"] * len(words) if nothing else tags) for words, tags in sentences])
        rows = (only_false / f"{name}.tsv").read_text().splitlines()
        (only_false / f"{name}.tsv").write_text("\n".join([rows[0]] + [row.rsplit("\t", 1)[0] + "\tfalse" if nothing
                                                                        else row for row in rows[1:]]) + "\n")
    said = {("finetune", "--task", "ner", "--data", only_o, "--init", tiny_init, "--out", out):
            f"{only_o} (train): no entity tags, only O: nothing to learn",
            ("finetune", "--task", "re", "--data", only_false, "--init", tiny_init, "--out", out):
            f"{only_false} (train): no relation but false: nothing to learn",
            (*ner[:4], folder / "train.txt", "--init", tiny_init, "--out", out):
            f"{folder / 'train.txt'}: is a file: --data names the benchmark's folder (train, dev and test)",
            (*ner, "--init", tmp_path / "nowhere", "--out", out): f"{tmp_path / 'nowhere'}: no such folder",
            (*ner, "--init", folder / "train.txt", "--out", out): f"{folder / 'train.txt'}: a file, not a model folder",
            (*ner, "--init", tiny_init, "--out", out, "--eval-data", folder): "--eval-data: for --task qa only",
            (*ner, "--init", tiny_init, "--out", out, "--doc-stride", 5): "--doc-stride: for --task qa only",
            (*ner, "--init", broken_init, "--out", out):
            f"{broken_init / 'discriminator' / 'config.json'}:2: not valid JSON (Expecting property name",
            ("evaluate", "--model", broken_config, "--data", folder / "test.txt"):
            f"{broken_config / 'config.json'}:2: not valid JSON (Expecting property name",
            ("evaluate", "--model", cut_weights, "--data", folder / "test.txt"):
            f"{cut_weights / 'pytorch_model.bin'}: cannot be read as weights (",
            ("evaluate", "--model", empty_weights, "--data", folder / "test.txt"):
            f"{empty_weights / 'pytorch_model.bin'}: cannot be read as weights (not a complete torch.save file of "
            "tensors: EOFError)",
            ("evaluate", "--model", stray_weights, "--data", folder / "test.txt"):
            f"{stray_weights / 'pytorch_model.bin'}: cannot be read as weights (not a complete torch.save file of "
            "tensors: KeyError)",
            ("predict", "--model", list_weights, folder / "test.txt"):
            f"{list_weights / 'pytorch_model.bin'}: cannot be read as weights (holds a list, not named tensors)",
            ("evaluate", "--model", other_vocab, "--data", folder / "test.txt"):
            f"{other_vocab / 'vocab.txt'}: {config.vocab_size + 1} tokens, but the model's embeddings have "
            f"{config.vocab_size} rows",
            (*ner, "--init", big_vocab_init, "--out", out):
            f"{big_vocab_init / 'discriminator' / 'vocab.txt'}: {config.vocab_size + 1} tokens, but the model's",
            ("predict", "--model", bad_windows, folder / "test.txt"):
            f"{bad_windows / 'config.json'}: electramed_windows is not a set of positive whole numbers",
            (*ner, "--init", no_discriminator, "--out", out):
            f"{no_discriminator}: no discriminator/ (its generator/ is not what fine-tuning starts from)",
            (*ner, "--init", no_disc_config, "--out", out):
            f"{no_disc_config / 'discriminator'}: not a model directory (no config.json)",
            ("evaluate", "--model", short_model, "--data", folder / "test.txt", "--max-length", 100):
            f"--max-length 100: longer than the position table of {short_model} (64 positions)",
            (*ner, "--init", short_init, "--out", out, "--max-length", 100):
            f"--max-length 100: longer than the position table of {short_init} (64 positions)",
            ("evaluate", "--model", model_dir, "--data", folder / "test.txt", "--golden", latin1):
            f"--golden {latin1}: scores a QA model's BioASQ test batch; {model_dir} is a ner model",
            ("predict", "--model", model_dir, folder): f"{folder}: a folder, not a text file",
            # one layout per run folder: a single run never goes into a --seeds run's folder, nor the reverse
            (*ner, "--init", tiny_init, "--out", seeded): f"{seeded}: holds a run of several --seeds (seed_K/)",
            (*ner, "--init", tiny_init, "--out", single, "--seeds", 2): f"{single}: holds a single run (result.json)",
            # the run's files would be read as data by its next run
            (*ner, "--init", tiny_init, "--out", folder / "run"):
            f"{folder / 'run'}: the same folder as, or nested with, the data {folder}; pass another --out"}
    if not torch.cuda.is_available():  # the device is checked before OUT is made
        said[(*ner, "--init", tiny_init, "--out", out, "--device", "cuda")] = "--device cuda: no CUDA device"
    for case in cases + list(said):
        result = cli(*case)
        assert result.returncode == 2, (case, result.stderr[-1500:])
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
        if case in said:
            assert result.stderr.startswith(f"error: {said[case]}"), (said[case], result.stderr)
        if case[-1] == other:  # the unknown tag is named with its file and line
            assert f"{other}:1: tag 'B-Chemical' is not among the labels trained on" in result.stderr
        run = next((path for path in case if path in inside), None)
        if run is not None:
            assert result.stderr == f"error: {run}: a run folder, not a model directory: the model in it is " \
                                    f"{inside[run]}\n"
    assert not out.exists() and not (folder / "run").exists()  # nothing written before the inputs validate


def test_predict_reads_stdin_as_strictly_as_a_file(tmp_path, tiny_init, monkeypatch, capsys):
    """Piped bytes that are not UTF-8: the same one-line error as for a file (stdin's text layer, with the C locale's
    surrogateescape, would let them through and echo them back)."""
    import io

    import train

    config = em.read_hf_config(tiny_init / "discriminator")[0]
    labels = ["O", "B-Disease", "I-Disease"]
    tasks.save_finetuned(tasks.build_model("ner", em.Encoder(config), config, labels), tmp_path / "model", labels,
                         tiny_init / "discriminator" / "vocab.txt", tasks.FinetuneConfig())
    piped = io.TextIOWrapper(io.BytesIO("Caf\xe9 au lait .\n".encode("latin-1")), errors="surrogateescape")
    monkeypatch.setattr(sys, "stdin", piped)
    assert train.main(["predict", "--model", str(tmp_path / "model")]) == 2
    assert capsys.readouterr().err == "error: stdin:1: not UTF-8 text (byte 3: invalid continuation byte)\n"
    (tmp_path / "latin-1.txt").write_bytes("BRCA1 .\nCaf\xe9 au lait .\n".encode("latin-1"))  # the line is named
    assert train.main(["predict", "--model", str(tmp_path / "model"), str(tmp_path / "latin-1.txt")]) == 2
    assert capsys.readouterr().err.endswith("latin-1.txt:2: not UTF-8 text (byte 11: invalid continuation byte)\n")
    # what is not a regular file but reads as one (bash's <(...), /dev/null) is read, not called missing
    assert train.main(["predict", "--model", str(tmp_path / "model"), os.devnull]) == 2
    assert capsys.readouterr().err == f"error: {os.devnull}: no text to predict on\n"
    # a byte-order mark (Windows editors write one) is not echoed back as part of the first line
    for name in ("with-bom.txt", None):
        text = "\ufeffMutations in BRCA1 cause breast cancer .\n".encode("utf-8")
        (tmp_path / "with-bom.txt").write_bytes(text)
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text)))
        assert train.main(["predict", "--model", str(tmp_path / "model"),
                           *([str(tmp_path / name)] if name else [])]) == 0
        printed = capsys.readouterr().out
        assert printed.startswith("Mutations") and printed.count("\n") == 1, printed


def test_predict_splits_words_as_the_training_corpus_did(tmp_path, data_dir, tiny_init, monkeypatch):
    """NCBI-disease splits every punctuation mark off ("cancer", "-", "prone"), JNLPBA keeps "IL-2" whole: predict cuts
    raw text as the model's corpus did, so that an entity can end where the corpus lets it end."""
    assert benchmarks.word_split(benchmarks.read_ner(data_dir / "ner/NCBI-disease/train.txt")) == "punctuation"
    assert benchmarks.word_split(benchmarks.read_ner(data_dir / "ner/JNLPBA/train.txt")) == "words"
    config = em.read_hf_config(tiny_init / "discriminator")[0]
    labels, vocab = ["O", "B-Disease", "I-Disease"], tiny_init / "discriminator" / "vocab.txt"
    model = tasks.build_model("ner", em.Encoder(config), config, labels)
    tasks.save_finetuned(model, tmp_path / "ncbi", labels, vocab, tasks.FinetuneConfig(), "punctuation")
    tasks.save_finetuned(model, tmp_path / "jnlpba", labels, vocab, tasks.FinetuneConfig(), "words")
    made_by_transformers(tmp_path / "jnlpba", tmp_path / "elsewhere")
    seen = []
    real = benchmarks.ner_features
    monkeypatch.setattr(benchmarks, "ner_features", lambda sentences, *args: seen.append(sentences[0][0]) or
                        real(sentences, *args))
    for model_dir in ("ncbi", "jnlpba", "elsewhere"):
        marked = inference.predict_lines(tmp_path / model_dir, ["cancer-prone IL-2 families ."])[0]
        assert re.sub(r"\[\[(.*?)\]\]/Disease", r"\1", marked) == "cancer-prone IL-2 families ."  # the text comes back
    assert seen == [["cancer", "-", "prone", "IL", "-", "2", "families", "."],
                    ["cancer-prone", "IL-2", "families", "."], ["cancer-prone", "IL-2", "families", "."]]


def made_by_transformers(model_dir, copy):
    """A copy of a fine-tuned model as transformers' save_pretrained leaves it: config.json without our windows."""
    shutil.copytree(model_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    del config["electramed_windows"]
    (copy / "config.json").write_text(json.dumps(config))


def test_evaluate_and_predict_read_examples_as_the_model_was_trained(tmp_path, tiny_init, monkeypatch):
    """The fine-tuning run's --max-length travels in config.json: evaluate and predict cut examples there unless
    given another; a model saved without it (made by transformers) gets Table 5's 128."""
    config = em.read_hf_config(tiny_init / "discriminator")[0]
    labels, vocab = ["O", "B-Disease", "I-Disease"], tiny_init / "discriminator" / "vocab.txt"
    model = tasks.build_model("ner", em.Encoder(config), config, labels)
    tasks.save_finetuned(model, tmp_path / "trained", labels, vocab, tasks.FinetuneConfig(max_length=24))
    made_by_transformers(tmp_path / "trained", tmp_path / "elsewhere")
    saved = json.loads((tmp_path / "trained" / "config.json").read_text())
    assert saved["electramed_windows"] == {"max_length": 24}
    assert transformers.AutoConfig.from_pretrained(tmp_path / "trained").num_labels == 3  # still theirs to read
    write_ner(tmp_path / "test.txt", [(["BRCA1", "cancer", "."], ["O", "B-Disease", "O"])])
    cut_at = []
    real = benchmarks.ner_features
    monkeypatch.setattr(benchmarks, "ner_features", lambda *args: cut_at.append(args[3]) or real(*args))
    for model_dir, given in (("trained", None), ("trained", 40), ("elsewhere", None)):
        inference.evaluate_file(tmp_path / model_dir, tmp_path / "test.txt", max_length=given)
        inference.predict_lines(tmp_path / model_dir, ["BRCA1 cancer ."], max_length=given)
    assert cut_at == [24, 24, 40, 40, 128, 128]
    # QA: the window, its stride and the question's cut travel together; --max-length replaces the window only
    qa_model = tasks.build_model("qa", em.Encoder(config), config, [])
    tasks.save_finetuned(qa_model, tmp_path / "qa", [], vocab, tasks.FinetuneConfig(max_length=200, doc_stride=50,
                                                                                   max_query_length=20))
    made_by_transformers(tmp_path / "qa", tmp_path / "qa-elsewhere")
    windows = [(c.max_length, c.doc_stride, c.max_query_length, c.batch_size) for c in (
        inference.read_config(tmp_path / "qa", qa_model, "qa", 16), inference.read_config(tmp_path / "qa", qa_model,
                                                                                          "qa", 8, 100),
        inference.read_config(tmp_path / "qa-elsewhere", qa_model, "qa", 16))]
    assert windows == [(200, 50, 20, 16), (100, 50, 20, 8), (384, 128, 64, 16)]


@pytest.mark.skipif(importlib.util.find_spec("torch_xla") is None and os.environ.get("CI") != "true",
                    reason="torch_xla is not installed (pip install -e '.[xla]')")
@pytest.mark.slow
def test_finetuning_on_xla_computes_what_cpu_computes(cli, tmp_path, data_dir, tiny_init):
    """Without dropout nothing is drawn at random after the head's initialisation (on the host, from the seed), so
    fine-tuning on the XLA CPU device (batches padded to --max-length, one compiled program per batch shape) trains
    what eager CPU torch trains (batches padded to their longest): the same losses, up to float32 rounding."""
    folder = tmp_path / "NCBI-disease"
    folder.mkdir()
    for name in ("train", "dev", "test"):
        write_ner(folder / f"{name}.txt", ncbi_sentences(data_dir, 32))  # 4 batches of 8: one shape to compile
    command = ["finetune", "--task", "ner", "--data", folder, "--init", tiny_init, "--epochs", 3, "--batch-size", 8,
               "--dropout", 0, "--learning-rate", 5e-3]
    assert cli(*command, "--out", tmp_path / "cpu").returncode == 0
    xla = subprocess.run([sys.executable, str(REPO / "train.py"), *map(str, command), "--out", str(tmp_path / "xla"),
                          "--device", "xla"], env={**os.environ, "PJRT_DEVICE": "CPU", "CPU_NUM_DEVICES": "1"},
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert xla.returncode == 0, xla.stderr[-3000:]
    on_cpu, on_xla = ([json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
                      for run in ("cpu", "xla"))
    assert [r["epoch"] for r in on_xla] == [1, 2, 3] and on_cpu[-1]["dev_f1"] > 0.5  # it learns
    # every program (the training step, evaluation, the model's save after epoch 1's log line) is compiled once, in
    # epoch 1, none after: splitting the fused QKV weights on the device to save them added 3 per layer (before the fix)
    assert len({r["xla_compiles"] for r in on_xla}) == 1 and "xla_compiles" not in on_cpu[0]
    # an epoch's 4 steps read the device once, for the epoch's loss at its end (reading each step's loss: 4)
    assert [r["xla_host_reads"] for r in on_xla] == [1, 1, 1]
    for a, b in zip(on_cpu, on_xla):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4), a["epoch"]
        # entity scores are counts: a token whose two largest logits differ by rounding alone may flip, no more
        assert b["dev_f1"] == pytest.approx(a["dev_f1"], abs=0.05), a["epoch"]
    tested = [json.loads((tmp_path / run / "result.json").read_text())["test"]["f1"] for run in ("cpu", "xla")]
    assert tested[1] == pytest.approx(tested[0], abs=0.05)

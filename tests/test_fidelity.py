"""The official algorithm by default (google-research/electra), every deviation behind a flag, and the figures that
show a discriminator learning: initialisation, --disc-prior-bias, --max-predictions, special ids in shards, the
plain-text sentence rule, the exact ROC AUC, the multi-tensor optimizer and the TensorBoard mirror of metrics.jsonl.

Independent references: scipy.stats (truncated normal and uniform distributions, via scikit-learn's dependency),
scikit-learn's roc_auc_score, transformers' BertTokenizerLegacy, and the optimizer's formula applied tensor by tensor.
"""
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import data
import electramed as em
import runtime
import pretrain
import train
from tokenizer import WordPieceTokenizer

stats = pytest.importorskip("scipy.stats")


# ---------------------------------------------------------------------------------------------------- initialisation
def test_initialisation_is_the_official_one():
    """create_initializer: N(0, 0.02) truncated at 2 std for every layer that passes it; TF's Glorot-uniform default
    for embeddings_project (both networks) and the discriminator's dense(1); zero biases; LayerNorm 1/0."""
    torch.manual_seed(0)
    config = em.preset("small", vocab_size=5000)
    model = em.ElectraForPretraining(config)
    glorot = {id(model.discriminator.prediction.weight), id(model.discriminator.encoder.embeddings_project.weight),
              id(model.generator.encoder.embeddings_project.weight)}
    truncated = stats.truncnorm(-2, 2, scale=0.02)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.LayerNorm):
            assert torch.equal(module.weight, torch.ones_like(module.weight)), name
            assert torch.equal(module.bias, torch.zeros_like(module.bias)), name
        if isinstance(module, torch.nn.Linear):
            assert torch.equal(module.bias, torch.zeros_like(module.bias)), name
        if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)) and id(module.weight) not in glorot:
            weights = module.weight.detach().flatten().double().numpy()
            assert np.abs(weights).max() <= 0.04, name  # truncated at 2 std
            if weights.size >= 10_000:  # the distribution itself: a truncated normal, not N(0, 0.02) nor a uniform
                assert stats.kstest(weights, truncated.cdf).pvalue > 1e-4, name
                assert weights.std() == pytest.approx(truncated.std(), rel=0.05)  # 0.0176, not 0.02
    assert np.abs(model.embeddings.word_embeddings.weight.detach().numpy()).max() > 0.0399  # cut at 0.04, no lower
    for linear in (model.discriminator.encoder.embeddings_project, model.generator.encoder.embeddings_project,
                   model.discriminator.prediction):
        fan_out, fan_in = linear.weight.shape
        limit = math.sqrt(6 / (fan_in + fan_out))
        weights = linear.weight.detach().flatten().double().numpy()
        assert np.abs(weights).max() <= limit
        assert stats.kstest(weights, stats.uniform(-limit, 2 * limit).cdf).pvalue > 1e-4
        assert torch.equal(linear.bias, torch.zeros_like(linear.bias))
    assert model.discriminator.prediction.bias.item() == 0.0  # ELECTRA's start: disc_prior_bias is off by default
    # the fine-tuning heads as ELECTRAMed's scripts start them: transformers' TF heads and BioBERT's run_factoid draw
    # their weights from a truncated normal too (get_initializer, truncated_normal_initializer), biases zero
    import tasks

    encoder = em.Encoder(config)
    for head in (tasks.build_model("ner", encoder, config, list("OBI")).classifier,
                 tasks.build_model("re", encoder, config, ["a", "b"]).dense,
                 tasks.build_model("qa", encoder, config, []).qa_outputs):
        weights = head.weight.detach().flatten().double().numpy()
        assert np.abs(weights).max() <= 0.04 and torch.equal(head.bias, torch.zeros_like(head.bias))
        if weights.size >= 10_000:  # the RE head's dense: the distribution, as above
            assert stats.kstest(weights, truncated.cdf).pvalue > 1e-4


# -------------------------------------------------------------------------------------------- default vs. the flags
def cli_model_config(*flags, preset="base"):
    args = train.build_parser().parse_args(["pretrain", "--preset", preset, *flags])
    args.world_size = 1
    vocab = SimpleNamespace(ids=range(31090), pad_id=0, cls_id=102, sep_id=103, mask_id=104)
    return pretrain.model_config(args, pretrain.resolve_config(args), vocab)


def test_generator_size_follows_electras_get_generator_config():
    """hidden = round(fraction x hidden), heads = max(1, hidden // 64), FFN 4 x hidden: the presets' own generators."""
    for preset, fraction in (("base", 1 / 3), ("large", 1 / 4), ("small", 1 / 4), ("tiny", 1 / 2)):
        flagged = cli_model_config("--generator-size", str(fraction), preset=preset)
        default = cli_model_config(preset=preset)
        for field in ("generator_hidden_size", "generator_num_heads", "generator_intermediate_size"):
            assert getattr(flagged, field) == getattr(default, field), (preset, field)
    assert cli_model_config("--generator-size", "0.75").generator_hidden_size == 576  # base: 9 heads of 64
    with pytest.raises(train.InputError, match=r"--generator-size 0.8: .* hidden size 614 .* 9 heads"):
        cli_model_config("--generator-size", "0.8")


def test_prior_bias_and_max_predictions_are_opt_in():
    default = cli_model_config()
    assert default.disc_prior_bias is False and default.max_predictions is None
    flagged = cli_model_config("--disc-prior-bias", "--max-predictions", "19")
    assert flagged.disc_prior_bias is True and flagged.max_predictions == 19
    bias = em.Discriminator(em.preset("tiny", vocab_size=120, disc_prior_bias=True)).prediction.bias.item()
    assert bias == pytest.approx(math.log(0.15 / 0.85))
    with pytest.raises(ValueError, match="max_predictions"):
        em.preset("tiny", max_predictions=0)


@pytest.mark.parametrize("max_predictions, slots", [(None, 79), (19, 19)])
def test_max_predictions_sets_the_slots_and_caps_the_masked_count(max_predictions, slots):
    """Default: ELECTRA's int((0.15 + 0.005) x 512) = 79 slots, round(0.15 x tokens) of them real; 19 (the official
    base run at 512) caps the count at 19, ~3.7% of 512 tokens."""
    config = em.preset("tiny", vocab_size=120, max_predictions=max_predictions)
    lengths = (512, 300, 40)
    ids = torch.zeros(3, 512, dtype=torch.long)
    for row, length in enumerate(lengths):
        ids[row, :length] = torch.randint(1, 101, (length,))
        ids[row, 0], ids[row, length - 1] = 101, 102
    mask = (ids != 0).long()
    torch.manual_seed(0)
    _, positions, weights = em.mask_tokens(ids, mask, config)
    assert positions.shape == weights.shape == (3, slots)
    assert weights.sum(dim=1).tolist() == [min(slots, round(0.15 * length)) for length in lengths]


# ------------------------------------------------------------------------------------------- special ids in shards
LITERALS = "Tokens like [SEP], [CLS], [PAD] and [MASK] appear in text: x[SEP]y, [mask] and [Sep]."


def test_literal_special_tokens_are_text_when_specials_is_false(scivocab):
    from transformers import BertTokenizerLegacy

    ours = WordPieceTokenizer(scivocab)
    # The reference tokenizes the same text with the special tokens spelled in lower case, which it does not match:
    # BERT's basic tokenizer then splits them like any other text, as the official pre-training tokenizer does.
    reference = BertTokenizerLegacy(str(scivocab), do_lower_case=True)
    expected = reference.encode(LITERALS.lower(), add_special_tokens=False)
    assert ours.tokenize_ids(LITERALS, specials=False) == expected
    specials = {ours.pad_id, ours.cls_id, ours.sep_id, ours.mask_id}
    assert not specials & set(expected)
    assert {ours.sep_id, ours.cls_id, ours.pad_id, ours.mask_id} <= set(ours.tokenize_ids(LITERALS))  # default kept
    assert ours.tokenize_ids(LITERALS) == reference.encode(LITERALS, add_special_tokens=False)
    # encode (tokens, ids, offsets; a pair), as fine-tuning featurizes text: the Rust tokenizer on the lower-cased text
    # (the same characters at the same places) gives the offsets
    from tokenizers import BertWordPieceTokenizer

    rust = BertWordPieceTokenizer(str(scivocab), lowercase=True).encode(LITERALS.lower(), "a [SEP] b".lower())
    encoding = ours.encode(LITERALS, pair="a [SEP] b", specials=False)
    assert (encoding.ids, encoding.offsets, encoding.type_ids) == (rust.ids, rust.offsets, rust.type_ids)
    assert ours.encode(LITERALS, specials=False).ids[1:-1] == expected
    assert ours.encode(LITERALS).ids[1:-1] == ours.tokenize_ids(LITERALS)  # default kept; the cache not mixed up
    assert ours.tokenize_ids(LITERALS, specials=False) == expected


def test_fine_tuning_inputs_hold_special_ids_only_where_berts_format_puts_them(scivocab):
    """The official fine-tuning code tokenizes with BERT's FullTokenizer, which splits a literal "[SEP]" in a sentence,
    a question or a passage like any other text: [CLS] and [SEP] occur only where the input format puts them."""
    import benchmarks

    tokenizer = WordPieceTokenizer(scivocab)
    specials = {tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id}
    words = LITERALS.split()
    (ner,) = benchmarks.ner_features([(words, ["O"] * len(words))], tokenizer, ["O"], 128)
    (relation,) = benchmarks.re_features([("1", LITERALS, "false")], tokenizer, ["false"], 128)
    qa_features = benchmarks.qa_features([benchmarks.QAExample("q", "Is [SEP] text?", LITERALS, [])], tokenizer)
    assert len(qa_features) == 1 and [i for i in qa_features[0].input_ids if i in specials] == [tokenizer.cls_id] + [tokenizer.sep_id] * 2
    assert [i for i in relation["input_ids"] if i in specials] == [tokenizer.cls_id, tokenizer.sep_id]
    assert [i for i in ner["input_ids"] if i in specials] == [tokenizer.cls_id, tokenizer.sep_id]


def test_shards_hold_special_ids_only_where_the_packer_put_them(scivocab, tmp_path):
    corpus = tmp_path / "corpus.txt"
    sentences = [f"Sentence {i} quotes {LITERALS}" for i in range(40)]
    corpus.write_text("\n".join(sentences[:20]) + "\n\n" + "\n".join(sentences[20:]) + "\n")
    out = tmp_path / "shards"
    data.build_shards([corpus], scivocab, out, max_length=64, processes=1)
    tokenizer = WordPieceTokenizer(scivocab)
    loader = data.PretrainingData(out, tokenizer.pad_id, tokenizer.sep_id)
    rows = loader.rows(np.arange(len(loader)))
    assert len(rows) > 10
    for row in rows:
        length = int((row != tokenizer.pad_id).sum())
        assert (row[length:] == tokenizer.pad_id).all()  # [PAD] only after the example
        assert row[0] == tokenizer.cls_id and (row[1:] != tokenizer.cls_id).all()
        seps = np.flatnonzero(row == tokenizer.sep_id)
        assert seps[-1] == length - 1 and len(seps) in (1, 2)  # [CLS] A [SEP] (B [SEP])
        assert (row != tokenizer.mask_id).all()


# ------------------------------------------------------------------------------------- one line = one sentence
def test_plain_text_lines_are_sentences_unless_the_file_holds_paragraphs(tmp_path):
    sentence_per_line = tmp_path / "bluebert.txt"
    sentence_per_line.write_text("Aspirin was given. Pain fell.\nA second line.\n\nNext abstract.\n")
    assert list(data.read_documents(sentence_per_line)) == [["Aspirin was given. Pain fell.", "A second line."],
                                                              ["Next abstract."]]
    paragraphs = tmp_path / "PMID-1.txt"  # BioNLP-ST layout: a title line, then the whole abstract on one line
    paragraphs.write_text("A title.\nAspirin was given. Pain fell. (Figure 2) Doses e.g. in mg. It worked.\n")
    assert data.file_format(paragraphs, paragraphs.read_text()) == "paragraphs"
    assert list(data.read_documents(paragraphs)) == [["A title.", "Aspirin was given.", "Pain fell.",
                                                      "(Figure 2) Doses e.g. in mg.", "It worked."]]


# ------------------------------------------------------------------------------------------------------ ROC AUC
def test_roc_auc_equals_scikit_learn_with_ties_and_ignored_tokens():
    from sklearn.metrics import roc_auc_score

    generator = torch.Generator().manual_seed(0)
    for trial in range(20):
        n = 50 + 37 * trial
        scores = torch.randint(0, 1 + trial, (n,), generator=generator).float()  # many ties; trial 0: all tied
        labels = torch.randint(-1, 2, (n,), generator=generator)  # -1: not scored
        kept = labels >= 0
        expected = roc_auc_score(labels[kept].numpy(), scores[kept].numpy())
        assert em.roc_auc(scores, labels) == pytest.approx(expected, abs=1e-12)
    scores = torch.randn(1000, generator=generator)
    labels = (scores + torch.randn(1000, generator=generator) > 1).long()
    assert em.roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels.numpy(), scores.numpy()), abs=1e-12)
    assert math.isnan(em.roc_auc(torch.rand(5), torch.zeros(5, dtype=torch.long)))  # one class only


def test_discriminator_progress_is_the_auc_and_the_gain_over_the_base_rate():
    logits = torch.tensor([[3.0, 0.5, 0.5, -1.0, 2.0]])
    labels = torch.tensor([[-1, 1, 0, 0, 1]])
    progress = pretrain.discriminator_progress({"disc_logits": logits, "disc_labels": labels},
                                            {"replaced_fraction": 0.15, "disc_loss": 0.4})
    assert progress["disc_auc"] == pytest.approx(0.875)  # pairs (1 vs 0): 0.5 (tie) + 1 + 1 + 1 over 4
    assert progress["disc_gain"] == pytest.approx(-(0.15 * math.log(0.15) + 0.85 * math.log(0.85)) - 0.4, abs=1e-6)


# ---------------------------------------------------------------------------------------------------- optimizer
def test_multi_tensor_optimizer_equals_the_per_tensor_formula_with_groups():
    torch.manual_seed(0)
    shapes = [(5, 3), (7,), (2, 2, 2), (4,), (6, 1)]
    params = [torch.nn.Parameter(torch.randn(shape)) for shape in shapes]
    settings = [dict(weight_decay=0.01, lr_scale=1.0), dict(weight_decay=0.0, lr_scale=0.64),
                dict(weight_decay=0.1, lr_scale=0.8)]
    groups = [{"params": params[:2], **settings[0]}, {"params": params[2:4], **settings[1]},
              {"params": params[4:], **settings[2]}]
    optimizer = runtime.AdamWeightDecay(groups, betas=(0.9, 0.999), eps=1e-6)
    group_of = [0, 0, 1, 1, 2]
    expected = [p.detach().clone() for p in params]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    for step, lr in enumerate((1e-2, 5e-3, 2e-3)):
        for i, p in enumerate(params):
            p.grad = None if (step == 1 and i == 3) else torch.randn(p.shape)  # a parameter without a gradient
        grads = [None if p.grad is None else p.grad.clone() for p in params]
        optimizer.step(torch.tensor(lr))
        for i, grad in enumerate(grads):  # ELECTRA's update, tensor by tensor
            if grad is None:
                continue
            decay, scale = settings[group_of[i]]["weight_decay"], settings[group_of[i]]["lr_scale"]
            m[i] = 0.9 * m[i] + 0.1 * grad
            v[i] = 0.999 * v[i] + 0.001 * grad ** 2
            expected[i] = expected[i] - lr * scale * (m[i] / (v[i].sqrt() + 1e-6) + decay * expected[i])
        for p, e in zip(params, expected):
            torch.testing.assert_close(p.detach(), e, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------------------- curves
def test_metrics_log_writes_json_lines_and_tensorboard_events_and_truncates_on_resume(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = runtime.MetricsLog(tmp_path)
    for step in (1, 2, 3):
        log.write({"step": step, "loss": 10.0 - step, "disc_auc": None, "note": "text"})
    log.close()
    resumed = runtime.MetricsLog(tmp_path, step=2)  # a run resumed from its step-2 checkpoint
    resumed.write({"step": 3, "loss": 0.5})
    resumed.close()
    assert [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [
        {"step": 1, "loss": 9.0, "disc_auc": None, "note": "text"},
        {"step": 2, "loss": 8.0, "disc_auc": None, "note": "text"}, {"step": 3, "loss": 0.5}]
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert events.Tags()["scalars"] == ["loss"]  # numbers only
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(1, 9.0), (2, 8.0), (3, 0.5)]  # purged step 3

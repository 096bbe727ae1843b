"""The algorithmic core checked against something other than itself (issue 15).

Each expected value is derived by hand from the official rules (google-research/electra, cited per test; details in
../shared/notes/electra-facts.md) or recomputed independently (autograd on a copy of the model, a closed-form
gradient, a chi-square test against softmax(logits / T)). None of these tests needs the data folder.

Packing: ELECTRA's build_pretraining_dataset.py, ExampleBuilder.add_line / _create_example:
    first_target = 100000 if random() < 0.1 else (target - 3) // 2
    sentence -> A if not A, or len(A) + len(s) < first_target, or (not B and len(A) < first_target and random() < 0.5)
    A = A[:max - 2];  B = B[:max(0, max - len(A) - 3)]
    next target = randint(5, max) if random() < 0.05 else max
and `add_line` creates an example once the running length reaches the target, or at a blank line (a new document).
The draws below are scripted one by one, in the order those rules consume them; the fake random source fails on any
draw the rules do not make and on any scripted draw left unused.
"""
import copy
import random
import unicodedata

import pytest
import torch

import data
import electramed as em
import runtime
import pretrain
import train
from tokenizer import SPECIAL_TOKENS, WordPieceTokenizer, train_vocab, write_vocab

CLS, SEP = 1, 2
MAX = 20


class ScriptedRandom:
    """A stand-in for random.Random whose random() and randint() return scripted values, in order."""

    def __init__(self, uniforms=(), integers=()):
        self.uniforms, self.integers, self.randint_calls = list(uniforms), list(integers), []

    def random(self):
        assert self.uniforms, "a random() draw the ELECTRA rules do not make"
        return self.uniforms.pop(0)

    def randint(self, low, high):
        assert self.integers, "a randint() draw the ELECTRA rules do not make"
        self.randint_calls.append((low, high))
        return self.integers.pop(0)

    def all_used(self):
        return not self.uniforms and not self.integers


def sentence(number, length):
    """A sentence of `length` distinct ids: 100 * number + 1, 100 * number + 2, ..."""
    return [100 * number + i for i in range(1, length + 1)]


def feed(builder, sentences):
    """add_sentence for each; every sentence but the last must leave the example open."""
    results = [builder.add_sentence(s) for s in sentences]
    assert results[:-1] == [None] * (len(sentences) - 1)
    return results[-1]


# ------------------------------------------------------------------------------------------------------------ packing
def test_packing_spill_rule_coin_says_second_segment():
    s1, s2, s3, s4 = sentence(1, 5), sentence(2, 3), sentence(3, 6), sentence(4, 7)  # 5, 8, 14, 21 >= 20
    # draws: 0.5 -> two segments, first target (20 - 3) // 2 = 8; s1 -> A (A empty); s2: 5 + 3 = 8 is not < 8 and
    # A (5) < 8 with B empty -> coin 0.5, not < 0.5 -> B; s3, s4 -> B (B is no longer empty: no coin);
    # 0.9 -> the next target stays 20.
    rng = ScriptedRandom([0.5, 0.5, 0.9])
    example = feed(data.ExampleBuilder(MAX, CLS, SEP, rng), [s1, s2, s3, s4])
    second = (s2 + s3 + s4)[:20 - 5 - 3]  # B trimmed to max - len(A) - 3 = 12
    assert example == [CLS, *s1, SEP, *second, SEP] and len(example) == 20
    assert rng.all_used()


def test_packing_spill_rule_coin_says_first_segment():
    s1, s2, s3, s4 = sentence(1, 5), sentence(2, 3), sentence(3, 6), sentence(4, 7)
    # coin 0.3 < 0.5 -> s2 joins A (A = 8); s3: 8 + 6 not < 8, and A (8) is not < 8 -> B with no coin; s4 -> B
    rng = ScriptedRandom([0.5, 0.3, 0.9])
    example = feed(data.ExampleBuilder(MAX, CLS, SEP, rng), [s1, s2, s3, s4])
    assert example == [CLS, *s1, *s2, SEP, *(s3 + s4)[:20 - 8 - 3], SEP]
    assert rng.all_used()


def test_packing_fits_below_first_target_without_a_coin():
    s1, s2, s3 = sentence(1, 3), sentence(2, 4), sentence(3, 14)  # 3, 7, 21
    # first target 8: s2 fits (3 + 4 = 7 < 8) -> A, no coin; s3: 7 + 14 not < 8, A (7) < 8, B empty -> coin 0.2 -> A
    rng = ScriptedRandom([0.5, 0.2, 0.9])
    example = feed(data.ExampleBuilder(MAX, CLS, SEP, rng), [s1, s2, s3])
    assert example == [CLS, *(s1 + s2 + s3)[:18], SEP]  # A trimmed to max - 2; B empty: one [SEP]
    assert rng.all_used()


def test_packing_single_segment_draw_and_its_threshold():
    s1, s2, s3, s4 = sentence(1, 5), sentence(2, 4), sentence(3, 6), sentence(4, 7)  # 22 tokens
    # 0.05 < 0.1: first target 100000, every sentence fits A; A trimmed to max - 2 = 18; no B, one [SEP]
    rng = ScriptedRandom([0.05, 0.9])
    example = feed(data.ExampleBuilder(MAX, CLS, SEP, rng), [s1, s2, s3, s4])
    assert example == [CLS, *(s1 + s2 + s3 + s4)[:18], SEP]
    assert rng.all_used()
    # exactly 0.1 is not < 0.1: two segments (first target 8); s2: 5 + 4 not < 8 -> coin 0.6 -> B
    rng = ScriptedRandom([0.1, 0.6, 0.9])
    example = feed(data.ExampleBuilder(MAX, CLS, SEP, rng), [s1, s2, s3, s4])
    assert example == [CLS, *s1, SEP, *(s2 + s3 + s4)[:12], SEP]
    assert rng.all_used()


def test_packing_first_segment_at_its_target_takes_no_coin():
    s1, s2, s3 = sentence(1, 8), sentence(2, 1), sentence(3, 11)  # 8, 9, 20
    # first target 8: s1 -> A (empty); s2: 8 + 1 not < 8 and A (8) is not < 8 -> B with no coin; s3 -> B
    rng = ScriptedRandom([0.5, 0.9])
    example = feed(data.ExampleBuilder(MAX, CLS, SEP, rng), [s1, s2, s3])
    assert example == [CLS, *s1, SEP, *(s2 + s3)[:20 - 8 - 3], SEP]
    assert rng.all_used()


def test_packing_long_first_segment_leaves_no_room_for_the_second():
    s1, s2 = sentence(1, 19), sentence(2, 3)  # 19, 22
    # s1 -> A (empty); s2: A (19) is not < 8 -> B, no coin. A -> 18 tokens; B -> max(0, 20 - 18 - 3) = 0 tokens,
    # so the example has one segment and one [SEP].
    rng = ScriptedRandom([0.5, 0.9])
    example = feed(data.ExampleBuilder(MAX, CLS, SEP, rng), [s1, s2])
    assert example == [CLS, *s1[:18], SEP]
    assert rng.all_used()
    # a first sentence alone over the target: it ends the example at once, trimmed to max - 2
    rng = ScriptedRandom([0.5, 0.9])
    assert data.ExampleBuilder(MAX, CLS, SEP, rng).add_sentence(sentence(3, 25)) == [CLS, *sentence(3, 25)[:18], SEP]
    assert rng.all_used()


def test_packing_short_target_draw_sets_the_next_examples_length():
    rng = ScriptedRandom([0.5, 0.4, 0.04,  # example 1: two segments; coin; 0.04 < 0.05 -> randint(5, 20)
                          0.5, 0.6, 0.05,  # example 2 (target 11): two segments; coin; exactly 0.05 -> back to 20
                          0.5, 0.7, 0.9],  # example 3 (target 20 again): two segments; coin; stays 20
                         integers=[11])
    builder = data.ExampleBuilder(MAX, CLS, SEP, rng)
    # first target 8: s1 -> A; s2: 5 + 7 not < 8, A (5) < 8 -> coin 0.4 -> A; s3: A (12) not < 8 -> B, trimmed to
    # 20 - 12 - 3 = 5
    s1, s2, s3 = sentence(1, 5), sentence(2, 7), sentence(3, 9)  # 5, 12, 21
    assert feed(builder, [s1, s2, s3]) == [CLS, *s1, *s2, SEP, *s3[:5], SEP]
    assert rng.randint_calls == [(5, 20)]
    # target 11 -> first target (11 - 3) // 2 = 4: s4 -> A; s5: 3 + 4 not < 4, A (3) < 4 -> coin 0.6 -> B; s6 -> B.
    # The example ends at 3 + 4 + 5 = 12 >= 11 (with the default target 20 it would still be open).
    s4, s5, s6 = sentence(4, 3), sentence(5, 4), sentence(6, 5)
    assert feed(builder, [s4, s5, s6]) == [CLS, *s4, SEP, *s5, *s6, SEP]  # trimming still uses max (20), not 11
    # target back to 20: 12 tokens do not end an example, 21 do. First target 8: s7 -> A; s8: 6 + 6 not < 8,
    # A (6) < 8 -> coin 0.7 -> B; s9 -> B; B trimmed to 20 - 6 - 3 = 11
    s7, s8, s9 = sentence(7, 6), sentence(8, 6), sentence(9, 9)
    assert feed(builder, [s7, s8, s9]) == [CLS, *s7, SEP, *(s8 + s9)[:11], SEP]
    assert rng.all_used() and rng.randint_calls == [(5, 20)]


def test_packing_document_boundary_flushes_and_never_mixes_documents():
    class ScriptedTokenizer:  # each "sentence" is the name of a scripted id list
        cls_id, sep_id = CLS, SEP
        sentences = {"a1": sentence(1, 4), "a2": sentence(2, 3), "b1": sentence(3, 12), "b2": sentence(4, 9),
                     "c1": sentence(5, 2), "empty": []}

        def tokenize_ids(self, text, **options):
            return self.sentences[text]

    ids = ScriptedTokenizer.sentences
    # document a: 7 tokens < 20; the boundary flushes it: 0.5 (two segments, first target 8), a2 fits (4 + 3 < 8)
    # -> one segment; 0.9. Document b: 12 + 9 = 21 ends an example inside the document (0.5, b2: 12 is not < 8 -> B,
    # no coin; 0.9); the boundary then has nothing to flush and draws nothing. Document c: one 2-token sentence
    # (and a sentence that tokenizes to nothing, skipped): 0.5, 0.9.
    rng = ScriptedRandom([0.5, 0.9, 0.5, 0.9, 0.5, 0.9])
    documents = [["a1", "a2"], ["b1", "b2"], ["empty", "c1"]]
    examples = list(data.pack_documents(documents, ScriptedTokenizer(), MAX, rng))
    assert examples == [[CLS, *ids["a1"], *ids["a2"], SEP],
                        [CLS, *ids["b1"], SEP, *ids["b2"][:20 - 12 - 3], SEP],
                        [CLS, *ids["c1"], SEP]]
    assert rng.all_used()


# --------------------------------------------------------------------------------------------------- optimizer groups
def tiny_config(**overrides):
    return em.preset("tiny", vocab_size=120, **overrides)


def test_no_decay_group_is_exactly_the_layernorm_weights_and_the_biases_by_official_name():
    """ELECTRA (optimization.py) excludes variables whose name contains "LayerNorm", "layer_norm" or "bias". Applied
    to transformers' names of every parameter (our names map to them one to one, tested both ways in
    test_electramed.py), that must be exactly our no-decay group."""
    model = em.ElectraForPretraining(tiny_config(embedding_size=48))  # both networks get embeddings_project
    decay, no_decay = runtime.parameter_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    official = {}  # id(parameter) -> its transformers name(s)
    for network in (model.generator, model.discriminator):
        parameters = dict(network.named_parameters())
        for key in network.state_dict():
            official.setdefault(id(parameters[key]), set()).add(em._hf_name(key, network))
    assert len(official) == len({id(p) for p in model.parameters()})
    excluded = {pid for pid, names in official.items()
                if any(word in name for name in names for word in ("LayerNorm", "layer_norm", "bias"))}
    assert {id(p) for p in no_decay["params"]} == excluded
    assert {id(p) for p in decay["params"]} == set(official) - excluded
    # and by module type: every LayerNorm parameter and every bias, nothing else
    by_type = {id(p) for m in model.modules() if isinstance(m, torch.nn.LayerNorm) for p in m.parameters()}
    by_type |= {id(p) for name, p in model.named_parameters() if name.endswith("bias")}
    assert excluded == by_type
    assert id(model.embeddings.word_embeddings.weight) in {id(p) for p in decay["params"]}  # embeddings decay
    assert len(decay["params"]) + len(no_decay["params"]) == len(official)  # the shared ones once


def test_optimizer_lr_scale_per_group_and_untouched_parameters_without_grad():
    torch.manual_seed(0)
    a, b, idle, frozen = (torch.nn.Parameter(torch.randn(3)) for _ in range(4))
    # the first group got no gradient at all: it is skipped, the groups after it are still updated
    optimizer = runtime.AdamWeightDecay([{"params": [frozen]}, {"params": [a], "lr_scale": 0.25, "weight_decay": 0.1},
                                         {"params": [b, idle]}], betas=(0.8, 0.9), eps=1e-3)
    start_a, start_b, start_idle = a.detach().clone(), b.detach().clone(), idle.detach().clone()
    start_frozen = frozen.detach().clone()
    grad_a, grad_b = torch.randn(3), torch.randn(3)
    a.grad, b.grad = grad_a.clone(), grad_b.clone()
    optimizer.step(torch.tensor(0.5))
    # one step from zero moments, no bias correction: m = 0.2 g, v = 0.1 g^2
    expected_a = start_a - 0.5 * 0.25 * (0.2 * grad_a / ((0.1 * grad_a ** 2).sqrt() + 1e-3) + 0.1 * start_a)
    expected_b = start_b - 0.5 * (0.2 * grad_b / ((0.1 * grad_b ** 2).sqrt() + 1e-3))  # default: no decay, scale 1
    torch.testing.assert_close(a.detach(), expected_a)
    torch.testing.assert_close(b.detach(), expected_b)
    assert torch.equal(idle.detach(), start_idle) and idle not in optimizer.state
    assert torch.equal(frozen.detach(), start_frozen) and frozen not in optimizer.state


def test_optimizer_state_made_up_front_is_the_state_the_first_step_would_make():
    """pretrain.py makes Adam's moments before step 1 (one XLA program for every step): the same zeros, the same step."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    twin = copy.deepcopy(model)
    early, lazy = (runtime.AdamWeightDecay(runtime.parameter_groups(m, 0.01)) for m in (model, twin))
    first = next(model.parameters())
    early.init_state([first])  # as step() calls it: the parameters that have a gradient, and no others
    assert list(early.state) == [first]
    early.init_state()
    assert [set(early.state[p]) for p in model.parameters()] == [{"exp_avg", "exp_avg_sq"}] * 4
    assert all(not tensor.any() for state in early.state.values() for tensor in state.values())
    for m, optimizer in ((model, early), (twin, lazy)):
        m(torch.randn(2, 4, generator=torch.Generator().manual_seed(1))).pow(2).sum().backward()
        optimizer.step(runtime.device_scalar(0.1, torch.device("cpu")))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))
    lr = runtime.device_scalar(0.0, torch.device("cpu"))  # torch_xla would make a 0-d zero a constant: sent as data
    assert lr.ndim == 0 and lr.dtype == torch.float32 and lr.item() == 0.0


def test_linear_schedule_edges():
    # ELECTRA: lr * (1 - t/T) * min(1, t/warmup); no warm-up -> the decay alone; past T -> 0, never negative
    assert runtime.linear_schedule(0, 2.0, 100, 0) == 2.0
    assert runtime.linear_schedule(25, 2.0, 100, 0) == pytest.approx(1.5)
    assert runtime.linear_schedule(150, 2.0, 100, 10) == 0.0
    assert runtime.linear_schedule(5, 2.0, 100, 10) == pytest.approx(2.0 * 0.95 * 0.5)
    assert runtime.linear_schedule(20, 2.0, 100, 10) == pytest.approx(2.0 * 0.8)  # warm-up over: factor 1


# ---------------------------------------------------------------------------------------- the training step, recorded
@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    """A synthetic corpus, its own 300-token vocabulary and shards at length 32: no data folder needed."""
    out = tmp_path_factory.mktemp("core")
    words = ["protein", "kinase", "binds", "the", "receptor", "cells", "were", "treated", "with", "dose",
             "tumor", "growth", "inhibits", "expression", "gene", "patients", "showed", "increased", "levels", "of"]
    rng = random.Random(0)
    documents = ["\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(4, 14))) + "."
                           for _ in range(8)) for _ in range(60)]
    (out / "corpus.txt").write_text("\n\n".join(documents) + "\n")
    write_vocab(train_vocab((out / "corpus.txt").read_text().splitlines(), 300), out / "vocab.txt")
    data.build_shards([out / "corpus.txt"], out / "vocab.txt", out / "shards", max_length=32, processes=1)
    return out


def recorded_run(monkeypatch, tiny_corpus, out, *flags):
    """Run `train.py pretrain` (tiny, CPU) recording, for every forward pass, the micro-batch, the state of torch's
    random generator and a copy of the model as it was, and at every optimizer step the gradients it receives (after
    the loop's accumulation and clipping), by parameter name."""
    forwards, steps, live = [], [], []
    forward, step = em.ElectraForPretraining.forward, runtime.AdamWeightDecay.step

    def recording_forward(self, input_ids, attention_mask, token_type_ids):
        live[:] = [self]
        forwards.append({"rng": torch.get_rng_state(), "model": copy.deepcopy(self),
                         "batch": {"input_ids": input_ids.clone(), "attention_mask": attention_mask.clone(),
                                   "token_type_ids": token_type_ids.clone()}})
        return forward(self, input_ids, attention_mask, token_type_ids)

    def recording_step(self, lr):
        name = {id(p): n for n, p in live[0].named_parameters()}
        params = [p for group in self.param_groups for p in group["params"]]
        assert sorted(name[id(p)] for p in params) == sorted(name.values())  # every parameter, once
        steps.append({name[id(p)]: p.grad.clone() for p in params if p.grad is not None})
        return step(self, lr)

    monkeypatch.setattr(em.ElectraForPretraining, "forward", recording_forward)
    monkeypatch.setattr(runtime.AdamWeightDecay, "step", recording_step)
    args = ["pretrain", "--preset", "tiny", "--vocab", str(tiny_corpus / "vocab.txt"), "--shards",
            str(tiny_corpus / "shards"), "--out", str(out), "--device", "cpu", "--batch-size", "4", "--max-length", "32",
            "--train-steps", "2", "--log-every", "1", "--warmup-steps", "1", *flags]
    assert train.main(args) == 0
    return forwards, steps


def reference_gradients(forwards):
    """Mean over the micro-batches of one step of d loss / d parameter, recomputed from the recorded model copy,
    batch and random state: the gradient of the step's batch loss, with no accumulation code involved."""
    total = {}
    for record in forwards:
        model = copy.deepcopy(record["model"])
        torch.set_rng_state(record["rng"])
        loss = model(**record["batch"])["loss"]
        named = list(model.named_parameters())
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
        for (name, p), g in zip(named, grads):
            total[name] = total.get(name, 0) + (torch.zeros_like(p) if g is None else g)
    return {name: t / len(forwards) for name, t in total.items()}


def global_norm(grads):
    return torch.sqrt(sum((g.double() ** 2).sum() for g in grads.values())).item()


def test_accumulation_gives_the_mean_gradient_of_the_micro_batches(monkeypatch, tiny_corpus, tmp_path):
    """Clipping off (clip norm 1e9): Adam is invariant to the gradient's scale, so only the gradients themselves show
    a missing division by the number of micro-batches, or gradients left over from the previous step."""
    forwards, steps = recorded_run(monkeypatch, tiny_corpus, tmp_path, "--accumulation-steps", "2",
                                   "--clip-norm", "1e9")
    assert len(forwards) == 4 and len(steps) == 2
    assert [tuple(r["batch"]["input_ids"].shape) for r in forwards] == [(2, 32)] * 4  # batch 4 in two halves
    for number, step in enumerate(steps):
        expected = reference_gradients(forwards[2 * number:2 * number + 2])
        assert step.keys() <= expected.keys() and all(not expected[n].any() for n in expected.keys() - step.keys())
        for name, got in step.items():
            torch.testing.assert_close(got, expected[name], rtol=1e-4, atol=1e-7, msg=name)


def test_clipping_scales_the_global_norm_down_to_clip_norm(monkeypatch, tiny_corpus, tmp_path):
    forwards, steps = recorded_run(monkeypatch, tiny_corpus, tmp_path, "--accumulation-steps", "2",
                                   "--clip-norm", "0.5")
    for number, step in enumerate(steps):
        expected = reference_gradients(forwards[2 * number:2 * number + 2])
        norm = global_norm(expected)
        assert norm > 1.0  # clipping has something to do (the tiny model's first gradients are larger)
        assert global_norm(step) == pytest.approx(0.5, rel=1e-4)
        # ELECTRA (tf.clip_by_global_norm): every gradient times clip_norm / global norm of the whole step's gradient
        for name, got in step.items():
            torch.testing.assert_close(got, expected[name] * (0.5 / norm), rtol=1e-4, atol=1e-8, msg=name)


def test_train_step_called_directly_equals_mean_gradient_clipped_then_electras_update():
    """pretrain.train_step as bench.py calls it (a plain model, default arguments), with two micro-batches: the result
    is ELECTRA's update from the clipped mean of the micro-batch gradients, recomputed here on a copy of the model."""
    torch.manual_seed(0)
    model = em.ElectraForPretraining(tiny_config()).train()
    reference = copy.deepcopy(model)
    ids = torch.randint(5, 100, (4, 16))
    ids[:, 0], ids[:, -1] = 101, 102
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    micro_batches = [{k: v[:2] for k, v in batch.items()}, {k: v[2:] for k, v in batch.items()}]
    optimizer = runtime.AdamWeightDecay(runtime.parameter_groups(model, 0.01))
    outputs = pretrain.train_step(model, model, optimizer, micro_batches, torch.tensor(1e-3), 0.5, seeds=[21, 22])
    assert len(outputs) == 2 and not any(v.requires_grad for out in outputs for v in out.values())
    assert all(p.grad is None for p in model.parameters())  # the step frees its gradients
    named = list(reference.named_parameters())
    total = [torch.zeros_like(p) for _, p in named]
    for seed, micro_batch in zip([21, 22], micro_batches):
        torch.manual_seed(seed)
        grads = torch.autograd.grad(reference(**micro_batch)["loss"], [p for _, p in named], allow_unused=True)
        total = [t + (0 if g is None else g) for t, g in zip(total, grads)]
    mean = [t / 2 for t in total]
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in mean)).item()
    assert norm > 0.5
    expected_optimizer = runtime.AdamWeightDecay(runtime.parameter_groups(reference, 0.01))
    for (_, p), g in zip(named, mean):
        p.grad = g * (0.5 / norm)
    expected_optimizer.step(torch.tensor(1e-3))
    for (name, want), (_, got) in zip(named, model.named_parameters()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7, msg=name)


def test_each_micro_batch_draws_from_its_own_seed(monkeypatch, tiny_corpus, tmp_path):
    """Masks, samples and dropout come from torch's generator seeded with step_seed(seed, step, micro-batch)."""
    forwards, _ = recorded_run(monkeypatch, tiny_corpus, tmp_path, "--accumulation-steps", "2", "--seed", "7")
    for index, record in enumerate(forwards):
        step, micro = divmod(index, 2)
        expected = torch.manual_seed(runtime.step_seed(7, step, micro)).get_state()
        assert torch.equal(record["rng"], expected), (step, micro)
    assert len({bytes(r["rng"].numpy()) for r in forwards}) == 4


def test_step_seed_is_a_function_of_seed_step_and_micro_batch_only():
    seeds = {(seed, step, micro): runtime.step_seed(seed, step, micro)
             for seed in (0, 1, 12345) for step in range(300) for micro in range(16)}
    assert len(set(seeds.values())) == len(seeds)  # distinct for every (seed, step, micro-batch)
    assert all(0 <= value < 2 ** 63 for value in seeds.values())  # a valid torch.manual_seed
    assert all(runtime.step_seed(*key) == value for key, value in list(seeds.items())[::97])
    assert runtime.step_seed(2 ** 62, 10 ** 9, 3) < 2 ** 63


def test_seeds_give_equal_draws_for_equal_keys_and_different_draws_otherwise():
    config = tiny_config()
    ids = torch.randint(5, 100, (4, 32))
    ids[:, 0], ids[:, -1] = config.cls_id, config.sep_id
    mask = torch.ones_like(ids)

    def draws(seed, step, micro):
        torch.manual_seed(runtime.step_seed(seed, step, micro))
        masked, positions, _ = em.mask_tokens(ids, mask, config)
        return masked, positions, em.dropout(torch.ones(256), 0.1, training=True)

    reference = draws(3, 5, 1)
    assert all(torch.equal(a, b) for a, b in zip(reference, draws(3, 5, 1)))
    for other in ((3, 6, 1), (3, 5, 0), (3, 5, 2), (4, 5, 1)):
        again = draws(*other)
        assert not torch.equal(reference[1], again[1]), other  # other mask positions
        assert not torch.equal(reference[2], again[2]), other  # other dropout mask


# ------------------------------------------------------------------------------------------------- tied output layer
def test_tied_output_embedding_gets_generator_gradient_on_tokens_absent_from_the_input():
    """The generator's output layer is the word-embedding matrix (run_pretraining.py: matmul with the embedding
    table): d gen_loss / d E[v] for a token v that is in no input = sum over real slots of softmax_v * h / (sum w +
    1e-6), h the head's LayerNorm output. An untied output layer gives those rows no gradient at all."""
    torch.manual_seed(0)
    model = em.ElectraForPretraining(tiny_config()).eval()
    ids = torch.randint(5, 40, (3, 16))  # tokens 40..119 appear nowhere in the input
    ids[:, 0], ids[:, -1] = 101, 102
    mask, types = torch.ones_like(ids), torch.zeros_like(ids)
    seen = {}
    model.generator.layer_norm.register_forward_hook(lambda m, i, o: seen.__setitem__("h", o))
    model.generator.register_forward_hook(  # positions: the generator's 4th argument
        lambda m, args, kwargs, o: seen.update(positions=kwargs.get("positions", args[3:4] and args[3]), logits=o),
        with_kwargs=True)
    out = model(ids, mask, types)
    word = model.embeddings.word_embeddings.weight
    (grad,) = torch.autograd.grad(out["gen_loss"], word)
    weights = (seen["positions"] != 0).float()  # real slots; the others point at position 0
    probabilities = torch.softmax(seen["logits"].detach(), dim=-1)  # [B, N, V]
    expected = torch.einsum("bn,bnv,bne->ve", weights, probabilities, seen["h"].detach()) / (weights.sum() + 1e-6)
    absent = torch.tensor(sorted(set(range(120)) - set(ids.flatten().tolist()) - {103}))
    assert len(absent) > 70
    torch.testing.assert_close(grad[absent], expected[absent], rtol=1e-4, atol=1e-8)
    assert grad[absent].abs().sum() > 0


# ------------------------------------------------------------------------------------------------------- sampling
CHI_SQUARE_4_DOF_999 = 18.467  # the 99.9% quantile of chi-square with 4 degrees of freedom (5 categories)


def chi_square(counts, probabilities):
    expected = probabilities * counts.sum()
    return (((counts - expected) ** 2) / expected).sum().item()


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_temperature_samples_follow_softmax_of_logits_over_temperature(temperature):
    """run_pretraining.py: sample_from_softmax(logits / temperature). 10,000 samples at a fixed seed."""
    torch.manual_seed(11)
    logits = torch.tensor([1.0, 0.5, 0.0, -0.5, -1.0])
    batch, slots = 200, 50
    ids = torch.zeros(batch, slots + 1, dtype=torch.long)
    positions = torch.arange(1, slots + 1).expand(batch, -1)
    weights = torch.ones(batch, slots, dtype=torch.bool)
    fake, _ = em.replace_tokens(ids, positions, weights, logits.expand(batch, slots, -1), temperature)
    counts = torch.bincount(fake[:, 1:].flatten(), minlength=5).double()
    assert chi_square(counts, torch.softmax(logits.double() / temperature, 0)) < CHI_SQUARE_4_DOF_999
    # and the test has power: the untempered softmax is rejected by far
    assert chi_square(counts, torch.softmax(logits.double(), 0)) > 10 * CHI_SQUARE_4_DOF_999


def test_model_samples_at_its_configured_temperature(monkeypatch):
    used = []
    replace = em.replace_tokens

    def recording_replace(*args, **kwargs):
        used.append(kwargs.get("temperature", args[4] if len(args) > 4 else "default"))
        return replace(*args, **kwargs)

    monkeypatch.setattr(em, "replace_tokens", recording_replace)
    model = em.ElectraForPretraining(tiny_config(temperature=0.7)).eval()
    ids = torch.randint(5, 100, (2, 16))
    ids[:, 0], ids[:, -1] = 101, 102
    model(ids, torch.ones_like(ids), torch.zeros_like(ids))
    assert used == [0.7]


# ------------------------------------------------------------------------------------------ accents are stripped
def has_combining_mark(token):
    return any(unicodedata.category(char) == "Mn" for char in token)


ACCENTED = ["Cafe\u0301 nai\u0308ve A\u030angstro\u0308m", "Café naïve Ångström", "ĉu Ŝtupo ñandú ŧ Ǆ"]


def test_tokenize_output_has_no_combining_marks(tmp_path):
    """BERT strips accents when lowercasing (NFD, then drop category Mn). The vocabulary holds continuation pieces
    for the marks themselves, so a tokenizer that kept them would emit them instead of [UNK]."""
    letters = "abcdefghijklmnopqrstuvwxyzŧǆ"
    marks = ["##\u0301", "##\u0308", "##\u030a", "##\u0302", "##\u030c", "##\u0303"]
    vocab = [*SPECIAL_TOKENS, "cafe", "naive", "angstrom", *letters, *("##" + c for c in letters), *marks]
    write_vocab(vocab, tmp_path / "vocab.txt")
    tokenizer = WordPieceTokenizer(tmp_path / "vocab.txt")
    assert [piece for piece, *_ in tokenizer.wordpiece("cafe\u0301")] == ["cafe", "##\u0301"]  # the test can fail
    for text in ACCENTED:
        tokens = tokenizer.tokenize(text)
        assert tokens and "[UNK]" not in tokens and not any(map(has_combining_mark, tokens)), (text, tokens)
    assert tokenizer.tokenize(ACCENTED[0]) == tokenizer.tokenize(ACCENTED[1]) == ["cafe", "naive", "angstrom"]
    cased = WordPieceTokenizer(tmp_path / "vocab.txt", lowercase=False)
    assert any(map(has_combining_mark, cased.tokenize("cafe\u0301")))  # BERT keeps accents when not lowercasing


def test_trained_vocabulary_has_no_combining_marks():
    lines = [text for text in ACCENTED for _ in range(20)]
    tokens = train_vocab(lines, 200)
    assert not any(map(has_combining_mark, tokens)), [t for t in tokens if has_combining_mark(t)]
    assert {"cafe", "naive", "angstrom"} <= set(tokens)


# ------------------------------------------------------------------- mutation-tested metrics, masking and forward
# Added after running mutmut on mask_tokens, generator_metrics, discriminator_metrics and ElectraForPretraining.forward
# (issue 15): each expected value is computed by hand from run_pretraining.py's rules (electra-facts.md section 3,
# items 5-13), not by calling the code under test a second way.
import math  # noqa: E402


def softplus(x):
    return math.log1p(math.exp(x))


def test_discriminator_metrics_by_hand():
    """run_pretraining.py _get_discriminator_output: loss = sum(input_mask * sigmoid_BCE) / (sum(input_mask) + 1e-6);
    preds = round((sign(logits) + 1) / 2), so a logit of exactly 0 (probability 0.5) is NOT a "replaced" prediction
    (round half to even); accuracy / precision / recall weighted by input_mask (padding never counts)."""
    logits = torch.tensor([[-2.0, 3.0, -1.0, 0.0, -4.0, 2.0, 5.0, -5.0]])
    labels = torch.tensor([[0, 1, 1, 0, 0, 1, 1, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0]])
    out = em.discriminator_metrics(logits, labels, mask)
    # real tokens 0..5: predicted [0, 1, 0, 0, 0, 1]; labels [0, 1, 1, 0, 0, 1]
    bce = [softplus(-x) if y else softplus(x) for x, y in zip([-2.0, 3.0, -1.0, 0.0, -4.0, 2.0], [0, 1, 1, 0, 0, 1])]
    assert out["disc_loss"].item() == pytest.approx(sum(bce) / (6 + 1e-6), rel=1e-6)
    assert out["disc_accuracy"].item() == pytest.approx(5 / 6, rel=1e-5)  # only token 2 (label 1, logit -1) is wrong
    assert out["disc_precision"].item() == pytest.approx(1.0, rel=1e-5)  # 2 predicted, both replaced
    assert out["disc_recall"].item() == pytest.approx(2 / 3, rel=1e-5)  # 3 replaced, 2 found
    assert out["replaced_fraction"].item() == pytest.approx(3 / 6, rel=1e-5)


def test_discriminator_metrics_on_one_real_token_are_proper_fractions():
    """One real token, correctly detected: every figure is a fraction <= 1 (an epsilon subtracted instead of added
    to a denominator gives > 1), and the loss is BCE / (1 + 1e-6), the official denominator."""
    logits, labels, mask = torch.tensor([[2.0, 7.0]]), torch.tensor([[1, 0]]), torch.tensor([[1, 0]])
    out = em.discriminator_metrics(logits, labels, mask)
    for key in ("disc_accuracy", "disc_precision", "disc_recall", "replaced_fraction"):
        assert 0.999 < out[key].item() <= 1.0, key
    torch.testing.assert_close(out["disc_loss"].double(), torch.tensor(softplus(-2.0) / (1 + 1e-6), dtype=torch.double),
                               rtol=3e-7, atol=0)
    wrong = em.discriminator_metrics(torch.tensor([[0.5, 0.0]]), torch.tensor([[0, 1]]), torch.tensor([[1, 1]]))
    assert wrong["disc_accuracy"].item() == 0 and wrong["disc_precision"].item() == 0  # predicted 1 (0.5 > 0), label 0
    assert wrong["disc_recall"].item() == 0  # the replaced token has logit 0: not detected


def test_generator_metrics_by_hand():
    """run_pretraining.py _get_masked_lm_output: loss = sum(w * CE) / (sum(w) + 1e-6) over the N slots, duplicates
    counted; masked_lm_accuracy = weighted mean of argmax == target."""
    logits = torch.tensor([[[2.0, 0.0, 0.0, -1.0], [0.0, 1.0, 3.0, 0.0], [0.0, 0.0, 0.0, 5.0]],
                           [[1.0, 0.5, 0.0, 0.0], [1.0, 0.5, 0.0, 0.0], [0.0, 4.0, 0.0, 0.0]]])
    targets = torch.tensor([[0, 1, 3], [1, 1, 0]])
    weights = torch.tensor([[True, True, False], [True, True, False]])  # last slots: null slots, not counted

    def cross_entropy(row, target):
        return math.log(sum(math.exp(v) for v in row)) - row[target]

    real = [(0, 0), (0, 1), (1, 0), (1, 1)]  # slot (1, 0) and (1, 1): the same position drawn twice
    expected_loss = sum(cross_entropy(logits[b, n].tolist(), targets[b, n].item()) for b, n in real) / (4 + 1e-6)
    out = em.generator_metrics(logits, targets, weights)
    assert out["gen_loss"].item() == pytest.approx(expected_loss, rel=1e-6)
    assert out["gen_accuracy"].item() == pytest.approx(1 / 4, rel=1e-5)  # only slot (0, 0): argmax 0 == target 0
    one = em.generator_metrics(logits[:1, :1], targets[:1, :1], weights[:1, :1])
    assert 0.999 < one["gen_accuracy"].item() <= 1.0
    torch.testing.assert_close(one["gen_loss"].double(),
                               torch.tensor(cross_entropy([2.0, 0.0, 0.0, -1.0], 0) / (1 + 1e-6), dtype=torch.double),
                               rtol=3e-7, atol=0)


@pytest.mark.parametrize("seq_len, slots", [(128, 19), (512, 79), (8, 1)])
def test_number_of_mask_slots_is_electras_max_predictions_per_seq(seq_len, slots):
    """configure_pretraining.py: max_predictions_per_seq = int((mask_prob + 0.005) * max_seq_length): 19 at 128
    tokens, 79 at 512, and a sequence of 8 still masks one token (int(1.24) = 1)."""
    config = tiny_config(max_position_embeddings=512)
    ids = torch.randint(5, 100, (2, seq_len))
    ids[:, 0], ids[:, -1] = config.cls_id, config.sep_id
    masked, positions, weights = em.mask_tokens(ids, torch.ones_like(ids), config)
    assert positions.shape == weights.shape == (2, slots)
    assert weights.sum(1).tolist() == [max(1, min(slots, round(0.15 * seq_len)))] * 2


def test_too_short_a_sequence_to_mask_is_a_clear_error():
    config = tiny_config()
    ids = torch.tensor([[config.cls_id, 7, 8, 9, 10, config.sep_id]])  # int(0.155 * 6) = 0 slots
    with pytest.raises(ValueError, match="too short to mask"):
        em.mask_tokens(ids, torch.ones_like(ids), config)


def test_pretraining_without_a_generator_says_what_to_use_instead():
    model = em.ElectraForPretraining(tiny_config())
    model.generator = None  # as load_pretrained leaves a discriminator-only checkpoint
    ids = torch.tensor([[101, 7, 8, 102]])
    message = r"^this model was loaded without a generator: use model\.discriminator \(fine-tuning\)$"
    with pytest.raises(ValueError, match=message):
        model(ids, torch.ones_like(ids), torch.zeros_like(ids))


def test_a_single_candidate_is_still_masked():
    """pretrain_helpers.py mask: num_to_predict = max(1, min(N, round(num_tokens * mask_prob))): [CLS] x [SEP] has
    round(3 * 0.15) = 0 but still predicts one token, necessarily x (position 1)."""
    config = tiny_config()
    ids = torch.tensor([[config.cls_id, 7, config.sep_id] + [0] * 13] * 4)
    mask = (ids != 0).long()
    torch.manual_seed(0)
    masked, positions, weights = em.mask_tokens(ids, mask, config)
    assert weights.sum(1).tolist() == [1] * 4
    assert (positions[weights] == 1).all() and (positions[~weights] == 0).all()


def pairwise_auc(scores, labels):
    """P(positive scores above negative) + P(tie) / 2, by counting every pair (entries labelled -1 left out)."""
    positives = [s for s, y in zip(scores, labels) if y == 1]
    negatives = [s for s, y in zip(scores, labels) if y == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def test_roc_auc_by_hand_and_by_counting_pairs():
    # positives 0.8, 0.4, 0.4; negatives 0.4, 0.1; 0.9 is ignored (-1): pairs won 2 + 0.5 + 1 + 0.5 + 1 = 5 of 6
    scores = torch.tensor([0.8, 0.4, 0.1, 0.9, 0.4, 0.4])
    labels = torch.tensor([1, 0, 0, -1, 1, 1])
    assert em.roc_auc(scores, labels) == pytest.approx(5 / 6, abs=1e-12)
    generator = torch.Generator().manual_seed(3)
    for _ in range(20):
        scores = torch.randint(0, 6, (40,), generator=generator).float() / 5  # many ties
        labels = torch.randint(-1, 2, (40,), generator=generator)
        assert em.roc_auc(scores, labels) == pytest.approx(pairwise_auc(scores.tolist(), labels.tolist()), abs=1e-12)
    assert math.isnan(em.roc_auc(torch.tensor([0.3, 0.5]), torch.tensor([1, -1])))  # no negative
    assert math.isnan(em.roc_auc(torch.tensor([0.3, 0.5]), torch.tensor([0, 0])))  # no positive

"""Tests for electramed.py on the `tiny` preset (CPU, seconds).

The reference is HuggingFace transformers' ElectraForPreTraining / ElectraForMaskedLM (test-only dependency): with
the same weights, logits must agree in both directions of conversion. The pre-training loss is recomputed here
independently (loops over slots, log-softmax and BCE by hand) from the same random draws.
"""
import json
import math

import pytest
import torch

import electramed as em

transformers = pytest.importorskip("transformers")

VOCAB = 120  # BERT ids: [PAD]=0, [CLS]=101, [SEP]=102, [MASK]=103; ordinary tokens are drawn from 1..100


def tiny(**overrides):
    return em.preset("tiny", vocab_size=VOCAB, **overrides)


def make_batch(lengths=(16, 11, 6), seq_len=16, seed=0):
    """[CLS] A [SEP] B [SEP] rows padded with 0; token types 0/1; attention mask 1 on real tokens."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), seq_len, dtype=torch.long)
    types = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, :length] = torch.randint(1, 101, (length,), generator=generator)
        middle = length // 2
        ids[row, 0], ids[row, middle], ids[row, length - 1] = 101, 102, 102
        types[row, middle + 1:length] = 1
    return ids, (ids != 0).long(), types


def perturb(*modules, seed=0):
    """Random weights everywhere (non-zero biases, LayerNorm != 1/0) so that every mapped tensor matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in modules:
            for parameter in module.parameters():
                parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))


def hf_config(config: em.ElectraConfig):
    return transformers.ElectraConfig(
        vocab_size=config.vocab_size, embedding_size=config.embedding_size, hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
        intermediate_size=config.intermediate_size, attn_implementation="eager")


def assert_loaded_cleanly(info):
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info


# ------------------------------------------------------------------------------------------ HF format, both directions
def test_ours_to_transformers_same_logits(tmp_path):
    torch.manual_seed(0)
    model = em.ElectraForPretraining(tiny(embedding_size=48)).eval()  # both networks with embeddings_project
    perturb(model)
    em.save_pretrained(model, tmp_path)
    disc, info = transformers.ElectraForPreTraining.from_pretrained(
        tmp_path / "discriminator", output_loading_info=True, attn_implementation="eager")
    assert_loaded_cleanly(info)
    gen, info = transformers.ElectraForMaskedLM.from_pretrained(
        tmp_path / "generator", output_loading_info=True, attn_implementation="eager")
    assert_loaded_cleanly(info)
    assert gen.config.hidden_size == 32 and disc.config.hidden_size == 64  # each network its own config.json
    ids, mask, types = make_batch()
    with torch.no_grad():
        ours_disc, ours_gen = model.discriminator(ids, mask, types), model.generator(ids, mask, types)
        theirs_disc = disc.eval()(ids, attention_mask=mask, token_type_ids=types).logits
        theirs_gen = gen.eval()(ids, attention_mask=mask, token_type_ids=types).logits
    assert ours_disc.shape == (3, 16) and ours_gen.shape == (3, 16, VOCAB)
    torch.testing.assert_close(ours_disc, theirs_disc, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours_gen, theirs_gen, atol=1e-5, rtol=0)


def write_vocab(path, cls_id=5, sep_id=6, mask_id=7):
    tokens = [f"tok{i}" for i in range(VOCAB)]
    tokens[0], tokens[cls_id], tokens[sep_id], tokens[mask_id] = "[PAD]", "[CLS]", "[SEP]", "[MASK]"
    path.write_text("\n".join(tokens) + "\n")


def test_transformers_to_ours_same_logits(tmp_path):
    config = tiny()
    torch.manual_seed(1)
    disc = transformers.ElectraForPreTraining(hf_config(config)).eval()
    gen = transformers.ElectraForMaskedLM(hf_config(config.generator_config())).eval()
    perturb(disc, gen, seed=1)
    # A real ELECTRA checkpoint pair has one set of embeddings (shared in pre-training): make the pair consistent.
    gen.electra.embeddings.load_state_dict(disc.electra.embeddings.state_dict())
    gen.generator_lm_head.weight = gen.electra.embeddings.word_embeddings.weight
    disc.save_pretrained(tmp_path / "discriminator")  # model.safetensors in transformers 5
    gen.save_pretrained(tmp_path / "generator")
    write_vocab(tmp_path / "discriminator" / "vocab.txt")
    model = em.load_pretrained(tmp_path).eval()
    assert (model.config.cls_id, model.config.sep_id, model.config.mask_id) == (5, 6, 7)  # from vocab.txt
    assert model.config.generator_hidden_size == 32 and model.config.objective == "electra"
    ids, mask, types = make_batch(seed=1)
    with torch.no_grad():
        torch.testing.assert_close(model.discriminator(ids, mask, types),
                                   disc(ids, attention_mask=mask, token_type_ids=types).logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(model.generator(ids, mask, types),
                                   gen(ids, attention_mask=mask, token_type_ids=types).logits, atol=1e-5, rtol=0)


def test_single_discriminator_directory_for_fine_tuning(tmp_path):
    torch.manual_seed(2)
    disc = transformers.ElectraForPreTraining(hf_config(tiny())).eval()
    perturb(disc, seed=2)
    disc.save_pretrained(tmp_path)
    model = em.load_pretrained(tmp_path)
    assert model.generator is None and model.config.objective == "electra"
    encoder = model.discriminator.encoder  # what fine-tuning starts from (tasks.load_init)
    assert isinstance(encoder, em.Encoder)
    ids, mask, types = make_batch(seed=2)
    with torch.no_grad():
        hidden = encoder(ids, mask, types)
        torch.testing.assert_close(hidden, disc.electra(ids, attention_mask=mask, token_type_ids=types)
                                   .last_hidden_state, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="without a generator"):
        model(ids, mask, types)


def test_round_trip_through_our_files_and_old_position_ids_key(tmp_path):
    torch.manual_seed(3)
    model = em.ElectraForPretraining(tiny()).eval()
    perturb(model, seed=3)
    em.save_pretrained(model, tmp_path)
    # transformers before 3.x saved the position_ids (and token_type_ids) buffers: such files must still load
    weights = tmp_path / "discriminator" / "pytorch_model.bin"
    state = torch.load(weights)
    state["electra.embeddings.position_ids"] = torch.arange(512)[None]
    state["electra.embeddings.token_type_ids"] = torch.zeros(1, 512, dtype=torch.long)
    torch.save(state, weights)
    loaded = em.load_pretrained(tmp_path).eval()
    assert loaded.config == model.config
    ids, mask, types = make_batch(seed=3)
    with torch.no_grad():
        assert torch.equal(loaded.discriminator(ids, mask, types), model.discriminator(ids, mask, types))
        assert torch.equal(loaded.generator(ids, mask, types), model.generator(ids, mask, types))
    assert loaded.embeddings is loaded.generator.encoder.embeddings is loaded.discriminator.encoder.embeddings


def test_mismatched_checkpoint_is_one_clear_error(tmp_path):
    em.save_pretrained(em.ElectraForPretraining(tiny()), tmp_path)
    weights = tmp_path / "discriminator" / "pytorch_model.bin"
    state = torch.load(weights)
    state["electra.encoder.layer.1.intermediate.dense.weight"] = torch.zeros(300, 64)
    del state["discriminator_predictions.dense.bias"]
    state["electra.pooler.weight"] = torch.zeros(3)
    torch.save(state, weights)
    with pytest.raises(ValueError) as error:
        em.load_pretrained(tmp_path)
    message = str(error.value)
    assert str(weights) in message
    for expected in ("missing: discriminator_predictions.dense.bias", "unexpected: electra.pooler.weight",
                     "electra.encoder.layer.1.intermediate.dense.weight (300, 64) (model: (256, 64))"):
        assert expected in message


# --------------------------------------------------------------------------------------------------- the joint loss
def reference_loss(model, ids, mask, types, seed):
    """ELECTRA's step recomputed by hand from the same random draws (order: positions, 85/15, Gumbel noise)."""
    config = model.config
    batch, seq_len = ids.shape
    num_slots = int((config.mask_prob + 0.005) * seq_len)
    torch.manual_seed(seed)
    candidates = torch.tensor([[float(mask[b, i] == 1 and i > 0 and int(ids[b, i]) not in (101, 102, 103))
                                for i in range(seq_len)] for b in range(batch)])
    positions = torch.multinomial(candidates, num_slots, replacement=True)
    keep_draw = torch.rand(batch, num_slots)
    uniform = torch.rand(batch, num_slots, config.vocab_size)
    masked = ids.clone()
    slots = []  # (row, slot, position) of the real slots
    for b in range(batch):
        num = max(1, min(num_slots, round(int(mask[b].sum()) * config.mask_prob)))
        for s in range(num):
            slots.append((b, s, int(positions[b, s])))
            if keep_draw[b, s] < 0.85:
                masked[b, positions[b, s]] = 103
    with torch.no_grad():
        gen_logits = model.generator(masked, mask, types)  # whole sequence; we pick the slots ourselves
    fake = ids.clone()
    written = set()
    gen_loss = correct = 0.0
    for b, s, p in slots:
        logits = gen_logits[b, p]
        gen_loss += -(logits[ids[b, p]] - torch.logsumexp(logits, 0))
        correct += float(logits.argmax() == ids[b, p])
        gumbel = -torch.log(-torch.log(uniform[b, s] + 1e-9) + 1e-9)
        if (b, p) not in written:  # a position drawn twice keeps its first slot's sample
            fake[b, p] = (logits + gumbel).argmax()
            written.add((b, p))
    labels = (fake != ids).float()
    with torch.no_grad():
        disc_logits = model.discriminator(fake, mask, types)
        probability = torch.sigmoid(disc_logits)
    # the per-token labels the host-side AUC reads: -1 where a token is not scored (padding, [CLS], [SEP])
    scored_labels = torch.tensor([[int(labels[b, i]) if mask[b, i] and int(ids[b, i]) not in (101, 102) else -1
                                   for i in range(seq_len)] for b in range(batch)])
    bce = -(labels * torch.log(probability) + (1 - labels) * torch.log(1 - probability))
    disc_loss = (bce * mask).sum() / mask.sum()
    gen_loss = gen_loss / len(slots)
    return {"loss": gen_loss + 50 * disc_loss, "gen_loss": gen_loss, "disc_loss": disc_loss,
            "gen_accuracy": torch.tensor(correct / len(slots)),
            "replaced_fraction": (labels * mask).sum() / mask.sum(), "disc_logits": disc_logits,
            "disc_labels": scored_labels}


def test_loss_equals_independent_computation():
    torch.manual_seed(4)
    model = em.ElectraForPretraining(tiny()).eval()  # eval: dropout off, the sampling still runs
    perturb(model, seed=4)
    ids, mask, types = make_batch(lengths=(16, 13, 9, 5), seed=4)
    for seed in range(3):
        torch.manual_seed(seed)
        out = model(ids, mask, types)
        expected = reference_loss(model, ids, mask, types, seed)
        assert all(value.dim() == 0 for key, value in out.items() if key not in ("disc_logits", "disc_labels"))
        assert not out["disc_logits"].requires_grad and out["disc_labels"].shape == ids.shape
        assert torch.equal(out["disc_labels"], expected.pop("disc_labels"))
        for key, value in expected.items():
            torch.testing.assert_close(out[key], value.float(), atol=1e-5, rtol=1e-5, msg=key)
        assert out["replaced_fraction"] > 0  # the random generator replaces some tokens: labels are exercised


def test_no_gradient_through_samples_and_shared_embeddings_get_both():
    model = em.ElectraForPretraining(tiny())
    assert model.embeddings is model.generator.encoder.embeddings is model.discriminator.encoder.embeddings
    word = model.embeddings.word_embeddings.weight
    assert sum(parameter is word for parameter in model.parameters()) == 1  # one tensor, listed once
    ids, mask, types = make_batch(lengths=(16, 14, 12), seed=5)
    torch.manual_seed(5)
    out = model(ids, mask, types)
    shared = list(model.embeddings.parameters())
    generator_own = [p for p in model.generator.parameters() if all(p is not s for s in shared)]
    discriminator_own = [p for p in model.discriminator.parameters() if all(p is not s for s in shared)]
    # The discriminator loss reaches the shared embeddings but not the generator through its sampled tokens
    grads = torch.autograd.grad(out["disc_loss"], shared + generator_own, retain_graph=True, allow_unused=True)
    assert all(g is not None and g.abs().sum() > 0 for g in grads[:len(shared)])
    assert all(g is None for g in grads[len(shared):])
    grads = torch.autograd.grad(out["gen_loss"], shared + discriminator_own, allow_unused=True)
    assert all(g is not None and g.abs().sum() > 0 for g in grads[:len(shared)])
    assert all(g is None for g in grads[len(shared):])


def test_padding_does_not_change_real_positions():
    model = em.ElectraForPretraining(tiny()).eval()
    perturb(model, seed=6)
    ids, mask, types = make_batch(lengths=(16, 9), seed=6)
    with torch.no_grad():
        batch_disc, batch_gen = model.discriminator(ids, mask, types), model.generator(ids, mask, types)
        alone_disc = model.discriminator(ids[1:, :9], mask[1:, :9], types[1:, :9])
        alone_gen = model.generator(ids[1:, :9], mask[1:, :9], types[1:, :9])
    torch.testing.assert_close(batch_disc[1, :9], alone_disc[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(batch_gen[1, :9], alone_gen[0], atol=1e-5, rtol=0)


def test_masking_statistics():
    config = tiny()
    lengths = [64, 50, 40, 33, 20, 10, 5, 2] * 4 + [1]  # 2 = [CLS] [SEP]: nothing to mask
    ids, mask, types = make_batch(lengths=lengths, seq_len=64, seed=7)
    ids[-3, 0] = ids[-1, 0] = 7  # rows without [CLS]: position 0 is still never chosen (it is the null slot)
    num_slots = int(0.155 * 64)
    expected_num = [max(1, min(num_slots, round(0.15 * n))) if n > 2 else 0 for n in lengths]
    is_candidate = (mask == 1) & (ids != 101) & (ids != 102) & (ids != 103)
    torch.manual_seed(7)
    masked_count = kept_count = twice_masked = twice_count = never_zero = 0
    counts = torch.zeros(64)
    for _ in range(300):
        masked, positions, weights = em.mask_tokens(ids, mask, config)
        assert positions.shape == weights.shape == (len(lengths), num_slots)
        assert weights.sum(1).tolist() == expected_num
        assert is_candidate.gather(1, positions)[weights].all()  # never a special token or padding
        assert (positions[~weights] == 0).all()  # unused slots point at the null slot
        changed = masked != ids
        assert (masked[changed] == 103).all()
        chosen = torch.zeros_like(changed).scatter(1, positions, weights)
        assert not (changed & ~chosen).any() and masked[:, 0].eq(ids[:, 0]).all()
        for row in range(len(lengths)):  # the 85/15 split, on positions drawn once
            real = positions[row][weights[row]].tolist()
            for position in real:
                if real.count(position) == 1:
                    masked_count += int(masked[row, position] == 103)
                    kept_count += int(masked[row, position] == ids[row, position])
                elif real.count(position) == 2:  # as scatter_update: masked if either slot says [MASK]
                    twice_masked += int(masked[row, position] == 103)
                    twice_count += 1
        counts += torch.bincount(positions[0][weights[0]], minlength=64).float()
        never_zero += int((positions[-3] == 0).sum() == num_slots - 1)
    share = masked_count / (masked_count + kept_count)
    assert abs(share - 0.85) < 0.01, share  # ~40k slots: std 0.002
    assert never_zero == 300
    assert twice_count > 1000 and abs(twice_masked / twice_count - (1 - 0.15 ** 2)) < 0.015
    # positions are uniform over the 62 candidates of the full row (300 x 9 draws: ~43.5 each, std ~6.5)
    candidates = counts[is_candidate[0]]
    assert counts[~is_candidate[0]].sum() == 0 and (candidates - candidates.mean()).abs().max() < 30


def test_gumbel_samples_follow_the_generator_softmax():
    torch.manual_seed(8)
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, -9.0])
    batch, slots = 200, 50
    ids = torch.zeros(batch, slots + 1, dtype=torch.long)  # position 0 is the null slot
    positions = torch.arange(1, slots + 1).expand(batch, -1)
    weights = torch.ones(batch, slots, dtype=torch.bool)
    fake, labels = em.replace_tokens(ids, positions, weights, logits.expand(batch, slots, -1))
    frequencies = torch.bincount(fake[:, 1:].flatten(), minlength=5).float() / (batch * slots)
    torch.testing.assert_close(frequencies, torch.softmax(logits, 0), atol=0.015, rtol=0)
    assert torch.equal(labels.bool(), fake != 0)  # sampling the original token (id 0) is labelled original


def test_position_drawn_twice_gets_its_first_sample():
    ids = torch.tensor([[101, 10, 11, 12, 13, 102]])
    positions, weights = torch.tensor([[3, 3, 4, 0]]), torch.tensor([[True, True, True, False]])
    logits = torch.full((1, 4, VOCAB), -1e4)
    logits[0, 0, 20] = logits[0, 1, 21] = logits[0, 2, 13] = logits[0, 3, 22] = 0.0  # certain samples
    fake, labels = em.replace_tokens(ids, positions, weights, logits)
    assert fake.tolist() == [[101, 10, 11, 20, 13, 102]]  # slot 0 wins; null slot writes nothing
    assert labels.tolist() == [[0, 0, 0, 1, 0, 0]]  # position 4 sampled its own token: labelled original


def test_dropout_keeps_expectation_and_is_off_in_eval():
    torch.manual_seed(10)
    x = torch.rand(1000, 1000) + 0.5
    y = em.dropout(x, 0.1, training=True)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.9) < 0.002  # 1M draws: std 0.0003
    torch.testing.assert_close(y[kept], x[kept] / 0.9)
    # Each 64-bit draw serves four neighbouring elements: every lane drops p, and neighbours drop independently.
    dropped = ~kept.flatten().view(-1, 4)
    assert all(abs(rate - 0.1) < 0.003 for rate in dropped.float().mean(dim=0).tolist())  # 250k draws each
    assert abs((dropped[:, :3] & dropped[:, 1:]).float().mean().item() - 0.01) < 0.001  # P(both) = p^2
    x = torch.rand(3, 5, 7, requires_grad=True)  # 105 elements: not a multiple of four
    y = em.dropout(x, 0.5, training=True)
    y.sum().backward()
    torch.testing.assert_close(x.grad, (y != 0).float() * 2.0)  # the gradient passes where the value does, scaled
    assert em.dropout(x, 0.1, training=False) is x
    model = em.ElectraForPretraining(tiny())
    ids, mask, types = make_batch(seed=10)
    with torch.no_grad():
        assert not torch.equal(model.discriminator(ids, mask, types), model.discriminator(ids, mask, types))
        model.eval()
        assert torch.equal(model.discriminator(ids, mask, types), model.discriminator(ids, mask, types))


# ------------------------------------------------------------------------------------- objectives learn; presets
@pytest.mark.parametrize("objective", ["mlm", "electra"])
def test_objective_runs_and_learns(objective, tmp_path):
    torch.manual_seed(9)
    model = em.ElectraForPretraining(tiny(objective=objective, dropout=0.0, attention_dropout=0.0))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    ids, mask, types = make_batch(lengths=(16,) * 8, seed=9)
    ids[:, 1:-1] = (torch.arange(14) % 7 + 10).expand(8, -1)  # a repeating pattern: predictable tokens
    ids[:, 8] = 102
    losses = []
    for _ in range(40):
        out = model(ids, mask, types)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(out["gen_loss"].item())
    expected_keys = {"loss", "gen_loss", "gen_accuracy"}
    if objective == "electra":
        expected_keys |= {"disc_loss", "disc_accuracy", "disc_precision", "disc_recall", "replaced_fraction",
                          "disc_logits", "disc_labels"}
    assert set(out) == expected_keys
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses
    if objective == "mlm":
        assert model.discriminator is None and model.generator.encoder.layers[0].qkv.in_features == 64
        em.save_pretrained(model, tmp_path)  # an MLM model exports its (discriminator-sized) generator only
        assert not (tmp_path / "discriminator").exists()
        loaded = em.load_pretrained(tmp_path).eval()
        assert loaded.config.objective == "mlm"
        with torch.no_grad():
            assert torch.equal(loaded.generator(ids, mask, types), model.eval().generator(ids, mask, types))


def constant_prediction_loss(share, p):
    """Binary cross-entropy of predicting p everywhere when a `share` of the labels is 1 (the base rate at p = share)."""
    return -(share * math.log(p) + (1 - share) * math.log(1 - p))


def test_discriminator_starts_at_the_base_rate():
    """disc_prior_bias: the output bias starts at logit(mask_prob), so the first discriminator loss is the base-rate
    cross-entropy, not ln 2; with it off the bias is ELECTRA's 0 (and the loss starts near ln 2)."""
    ids, mask, types = make_batch(lengths=(16,) * 64, seed=4)
    for prior, expected_bias in ((True, math.log(0.15 / 0.85)), (False, 0.0)):
        torch.manual_seed(4)
        model = em.ElectraForPretraining(tiny(disc_prior_bias=prior)).eval()
        assert model.discriminator.prediction.bias.item() == pytest.approx(expected_bias, abs=1e-6)
        with torch.no_grad():
            out = model(ids, mask, types)
        expected_loss = constant_prediction_loss(out["replaced_fraction"].item(), 1 / (1 + math.exp(-expected_bias)))
        assert out["disc_loss"].item() == pytest.approx(expected_loss, abs=0.02)
    assert expected_loss == pytest.approx(math.log(2))  # the official start: p = 0.5 everywhere


def successor_batch(generator, batch=16, seq_len=32):
    """Token t is always followed by (7t + 3) % 100 + 1; 15% of positions get a uniformly random token. Every token is
    equally frequent, so a replaced token can be told only from its neighbours: a context-only detection task."""
    ids = torch.empty(batch, seq_len, dtype=torch.long)
    ids[:, 0] = torch.randint(1, 101, (batch,), generator=generator)
    for i in range(1, seq_len):
        ids[:, i] = (7 * ids[:, i - 1] + 3) % 100 + 1
    corrupt = torch.rand(batch, seq_len, generator=generator) < 0.15
    fake = torch.where(corrupt, torch.randint(1, 101, (batch, seq_len), generator=generator), ids)
    return fake, (fake != ids).float()


def test_prior_bias_lets_the_discriminator_learn_context():
    """From ELECTRA's zero bias the first updates push every position towards "original" together, the
    representations collapse to one vector and the loss stays at the base rate (transformers' ElectraForPreTraining
    does the same, to 3 decimals); from the prior bias the same network learns the task in 200 steps."""
    final_loss = {}
    for prior in (True, False):
        torch.manual_seed(0)
        discriminator = em.Discriminator(tiny(disc_prior_bias=prior)).train()
        optimizer = torch.optim.Adam(discriminator.parameters(), lr=1e-3)
        generator, losses = torch.Generator().manual_seed(1), []
        for _ in range(200):
            fake, labels = successor_batch(generator)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(discriminator(fake), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        final_loss[prior] = sum(losses[-10:]) / 10
    share = 0.15 * 0.99  # replaced and different from the original
    base_rate_loss = constant_prediction_loss(share, share)  # 0.418 nats
    assert final_loss[True] < 0.75 * base_rate_loss, final_loss
    assert final_loss[False] == pytest.approx(base_rate_loss, abs=0.02), final_loss


def test_presets():
    small = em.preset("small", vocab_size=31090)
    assert (small.hidden_size, small.num_layers, small.num_heads, small.intermediate_size, small.embedding_size) == \
        (256, 12, 4, 1024, 128)
    assert (small.generator_hidden_size, small.generator_num_heads, small.generator_intermediate_size) == (64, 1, 256)
    base = em.preset("base")
    assert (base.hidden_size, base.intermediate_size, base.num_heads, base.embedding_size) == (768, 3072, 12, 768)
    assert (base.generator_hidden_size, base.generator_num_heads, base.generator_intermediate_size) == (256, 4, 1024)
    assert base.generator_config().hidden_size == 256 and base.generator_config().embedding_size == 768
    assert em.preset("large").mask_prob == 0.25
    assert (small.dropout, small.layer_norm_eps, small.disc_weight, small.mask_prob) == (0.1, 1e-12, 50.0, 0.15)
    with pytest.raises(ValueError, match="unknown preset"):
        em.preset("huge")
    with pytest.raises(ValueError, match="objective"):
        em.preset("tiny", objective="rtd")
    json.dumps(em._hf_config(small, "ElectraForPreTraining"))  # the exported config is plain JSON

"""ELECTRA, as pre-trained for ELECTRAMed: a shared embedding block, a small generator and a discriminator trained
jointly on replaced-token detection, plus checkpoints in HuggingFace's ELECTRA format (both ways).

References followed (details: ../shared/notes/electra-facts.md):
- Clark, Luong, Le, Manning (2020). ELECTRA: Pre-training Text Encoders as Discriminators Rather Than Generators. ICLR.
- google-research/electra: model/modeling.py (BertModel; embeddings shared under the scope "electra/embeddings"),
  pretrain/pretrain_helpers.py (mask, scatter_update, sample_from_softmax), run_pretraining.py (PretrainingModel:
  _get_masked_lm_output, _get_fake_data, _get_discriminator_output), configure_pretraining.py (hyper-parameters).
- Miolo, Mantoan, Orsenigo (2021). ELECTRAMed: a new pre-trained language representation model for biomedical NLP.
  arXiv:2104.09585 (ELECTRA-Base pre-trained on PubMed with a SciVocab WordPiece vocabulary).
- HuggingFace transformers, models/electra/modeling_electra.py: the parameter names and config.json we read and write.

Modules: Embeddings -> Encoder (embeddings, projection, post-LN transformer layers) -> Discriminator / Generator heads
-> ElectraForPretraining (the joint loss). Fine-tuning heads sit on an `Encoder` (tasks.py).
"""
import json
import math
import shutil
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


# -------------------------------------------------------------------------------------------------------------- config
@dataclass
class ElectraConfig:
    """Defaults are ELECTRA-Small with the BERT uncased vocabulary (configure_pretraining.py); see `preset`."""
    vocab_size: int = 30522
    embedding_size: int = 128
    hidden_size: int = 256
    num_layers: int = 12
    num_heads: int = 4
    intermediate_size: int = 1024
    # ELECTRA: the generator is a separate, smaller transformer (1/4 of the hidden size for Small, 1/3 for Base)
    generator_hidden_size: int = 64
    generator_num_heads: int = 1
    generator_intermediate_size: int = 256
    generator_num_layers: int = 12
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    mask_prob: float = 0.15
    gen_weight: float = 1.0
    disc_weight: float = 50.0  # ELECTRA: lambda = 50
    temperature: float = 1.0
    # Opt-in, ours, not ELECTRA's (whose bias starts at 0): start the discriminator's output bias at the log-odds of
    # mask_prob, the share of tokens replaced while the generator is still untrained. From 0 (p = 0.5) the first
    # gradients push every position the same way ("less replaced"); with a short warm-up Adam moves all weights
    # together and the post-LN discriminator can map every position to one vector and predict the base rate from
    # then on (README "Pre-training on a small budget" says when it helps). False (default) is the official start.
    disc_prior_bias: bool = False
    # Masked slots per sequence; None = ELECTRA's rule int((mask_prob + 0.005) * seq_len), 15% of every length. The
    # official base/large runs at 512 get 19 (configure_pretraining.py computes it from the length 128 before the
    # base/large block sets 512): max_predictions=19 reproduces that.
    max_predictions: int | None = None
    objective: str = "electra"  # "electra" (replaced-token detection) or "mlm" (BERT-style, generator loss only)
    pad_id: int = 0
    cls_id: int = 101  # BERT vocabulary ids; pretrain.py sets them from the vocabulary (SciVocab: 102, 103, 104)
    sep_id: int = 102
    mask_id: int = 103

    def __post_init__(self):
        if self.objective not in ("electra", "mlm"):
            raise ValueError(f"objective must be 'electra' or 'mlm', not {self.objective!r}")
        sizes = ((self.hidden_size, self.num_heads), (self.generator_hidden_size, self.generator_num_heads))
        for hidden, heads in sizes:
            if hidden % heads:
                raise ValueError(f"hidden size {hidden} is not a multiple of the number of heads {heads}")
        if self.max_predictions is not None and self.max_predictions < 1:
            raise ValueError(f"max_predictions must be at least 1, not {self.max_predictions}")

    def generator_config(self) -> "ElectraConfig":
        """The generator network's sizes; for the "mlm" objective it is the discriminator-sized encoder."""
        if self.objective == "mlm":
            return self
        return replace(self, hidden_size=self.generator_hidden_size, num_heads=self.generator_num_heads,
                       intermediate_size=self.generator_intermediate_size, num_layers=self.generator_num_layers)


PRESETS = {
    "tiny": dict(embedding_size=64, hidden_size=64, num_layers=2, num_heads=2, intermediate_size=256,
                 generator_hidden_size=32, generator_num_heads=1, generator_intermediate_size=128,
                 generator_num_layers=2),
    "small": dict(),  # the dataclass defaults
    # Paper Table 6 / configure_pretraining.py: generator 1/3 for Base, 1/4 for Large; Large masks 25%.
    "base": dict(embedding_size=768, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072,
                 generator_hidden_size=256, generator_num_heads=4, generator_intermediate_size=1024,
                 generator_num_layers=12),
    "large": dict(embedding_size=1024, hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096,
                  generator_hidden_size=256, generator_num_heads=4, generator_intermediate_size=1024,
                  generator_num_layers=24, mask_prob=0.25),
}


def preset(name: str, **overrides) -> ElectraConfig:
    """`preset("small", vocab_size=31090)`: a named size, then any field overridden."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return ElectraConfig(**{**PRESETS[name], **overrides})


def dropout(x, p: float, training: bool):
    """Inverted dropout. On CPU, F.dropout draws its mask with bernoulli_, single-threaded at ~6.6 ns per element here;
    one 64-bit draw read as four 16-bit uniforms costs ~1.1 ns per element. An element is dropped when its 16 bits
    fall among the lowest round(p * 2^16) values: p = 0.1 drops 6,554 / 65,536 = 0.100006."""
    if not training or p == 0.0 or x.device.type != "cpu":
        return F.dropout(x, p, training)
    bits = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_(-2 ** 63, None)  # the full 64-bit range
    keep = bits.view(torch.int16)[:x.numel()].view(x.shape) >= round(p * 2 ** 16) - 2 ** 15
    return x * keep.to(x.dtype).mul_(1.0 / (1.0 - p))  # a float mask: its backward is faster than a bool one's


def init_weights(module: nn.Module, std: float):
    """The official initialisation (model/modeling.py:create_initializer, tf.truncated_normal_initializer): weights of
    Linear and Embedding layers from N(0, std) truncated at 2 std (out-of-range draws are redrawn, as TF does), zero
    biases; LayerNorm keeps its 1/0 (contrib layer_norm). transformers uses an untruncated N(0, std) instead."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


def _init_glorot(linear: nn.Linear):
    """TF's default for a tf.layers.dense given no kernel_initializer: Glorot-uniform, U(-l, l) with
    l = sqrt(6 / (fan_in + fan_out)), zero bias. The official code leaves two layers so: `embeddings_project`
    (model/modeling.py, BertModel.__init__) and the discriminator's dense(1) (run_pretraining.py,
    _get_discriminator_output)."""
    nn.init.xavier_uniform_(linear.weight)
    nn.init.zeros_(linear.bias)


# --------------------------------------------------------------------------------------------------------------- model
class Embeddings(nn.Module):
    """word + position + token type -> LayerNorm -> dropout. ELECTRA shares this whole block between both networks."""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.embedding_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.embedding_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.embedding_size)
        self.layer_norm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)
        self.hidden_dropout = config.dropout
        init_weights(self, config.initializer_range)

    def forward(self, input_ids, token_type_ids):
        seq_len = input_ids.shape[1]
        x = (self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
             + self.position_embeddings.weight[:seq_len])  # positions 0..seq_len-1, broadcast over the batch
        return dropout(self.layer_norm(x), self.hidden_dropout, self.training)


class Layer(nn.Module):
    """A post-LN BERT layer: x = LN(x + Attention(x)); x = LN(x + FFN(x)), GELU in the FFN."""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        hidden = config.hidden_size
        self.num_heads = config.num_heads
        self.attention_dropout = config.attention_dropout
        self.qkv = nn.Linear(hidden, 3 * hidden)  # query, key, value in one matmul; split into three at checkpoint I/O
        self.attention_dense = nn.Linear(hidden, hidden)
        self.attention_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.intermediate = nn.Linear(hidden, config.intermediate_size)
        self.output_dense = nn.Linear(config.intermediate_size, hidden)
        self.output_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.hidden_dropout = config.dropout
        init_weights(self, config.initializer_range)

    def forward(self, x, attention_mask):  # x [B, S, H]; attention_mask bool [B, 1, 1, S], True = a real token
        batch, seq_len, hidden = x.shape
        # [B, S, 3H] -> [B, S, 3, heads, head_dim] -> three [B, heads, S, head_dim]
        query, key, value = self.qkv(x).view(batch, seq_len, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        context = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                 dropout_p=self.attention_dropout if self.training else 0.0)
        context = context.transpose(1, 2).reshape(batch, seq_len, hidden)  # [B, heads, S, head_dim] -> [B, S, H]
        x = self.attention_norm(x + dropout(self.attention_dense(context), self.hidden_dropout, self.training))
        # exact (erf) GELU, as transformers' hidden_act "gelu"; the TF code's tanh form is <= 0.0005 away (README)
        ffn_output = self.output_dense(F.gelu(self.intermediate(x)))
        return self.output_norm(x + dropout(ffn_output, self.hidden_dropout, self.training))


class Encoder(nn.Module):
    """Embeddings -> projection to the hidden size (each network its own, modeling.py) -> transformer layers.

    `Encoder(config)` owns its embeddings (fine-tuning); inside ElectraForPretraining both networks get the shared
    block. `encoder(input_ids, attention_mask, token_type_ids)` -> hidden states [batch, seq, hidden].
    """

    def __init__(self, config: ElectraConfig, embeddings: Embeddings | None = None):
        super().__init__()
        self.embeddings = embeddings if embeddings is not None else Embeddings(config)
        self.embeddings_project = None
        if config.embedding_size != config.hidden_size:
            self.embeddings_project = nn.Linear(config.embedding_size, config.hidden_size)
            _init_glorot(self.embeddings_project)  # modeling.py: tf.layers.dense(..., name="embeddings_project")
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_layers))

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        if self.embeddings_project is not None:
            x = self.embeddings_project(x)
        mask = attention_mask.bool()[:, None, None, :]  # [B, S] -> [B, 1, 1, S]: every query sees the real keys
        for layer in self.layers:
            x = layer(x, mask)
        return x


class Discriminator(nn.Module):
    """The transformer + head dense -> GELU -> dense -> one logit per token ("is this token replaced?")."""
    # our head's names -> transformers' (ElectraForPreTraining)
    hf_heads = {"dense.": "discriminator_predictions.dense.",
                "prediction.": "discriminator_predictions.dense_prediction."}

    def __init__(self, config: ElectraConfig, embeddings: Embeddings | None = None):
        super().__init__()
        self.encoder = Encoder(config, embeddings)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.prediction = nn.Linear(config.hidden_size, 1)
        init_weights(self.dense, config.initializer_range)
        _init_glorot(self.prediction)  # run_pretraining.py: tf.layers.dense(hidden, units=1), no initializer
        if config.disc_prior_bias:  # sigmoid(bias) = mask_prob: the loss starts at the base rate (see ElectraConfig)
            nn.init.constant_(self.prediction.bias, math.log(config.mask_prob / (1.0 - config.mask_prob)))

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):  # -> logits [B, S]
        hidden = self.encoder(input_ids, attention_mask, token_type_ids)
        return self.prediction(F.gelu(self.dense(hidden))).squeeze(-1)


class Generator(nn.Module):
    """A smaller transformer + MLM head dense -> GELU -> LayerNorm -> output layer tied to the shared word embeddings,
    with its own bias (run_pretraining.py:_get_masked_lm_output)."""
    # our head's names -> transformers' (ElectraForMaskedLM; its generator_lm_head.weight is the word embeddings)
    hf_heads = {"dense.": "generator_predictions.dense.", "layer_norm.": "generator_predictions.LayerNorm.",
                "output_bias": "generator_lm_head.bias"}

    def __init__(self, config: ElectraConfig, embeddings: Embeddings | None = None):
        super().__init__()
        self.encoder = Encoder(config, embeddings)
        self.dense = nn.Linear(config.hidden_size, config.embedding_size)
        self.layer_norm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)
        self.output_bias = nn.Parameter(torch.zeros(config.vocab_size))
        init_weights(self.dense, config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, positions=None):
        """Vocabulary logits [B, S, V], or [B, N, V] at `positions` [B, N] only (the official code gathers the
        masked slots before the head, which saves most of the vocabulary projection)."""
        hidden = self.encoder(input_ids, attention_mask, token_type_ids)  # [B, S, H]
        if positions is not None:
            hidden = hidden.gather(1, positions[:, :, None].expand(-1, -1, hidden.shape[-1]))  # [B, N, H]
        hidden = self.layer_norm(F.gelu(self.dense(hidden)))  # [B, N, E]
        return F.linear(hidden, self.encoder.embeddings.word_embeddings.weight, self.output_bias)


# ------------------------------------------------------------------------------------------------ the pre-training step
def mask_tokens(input_ids, attention_mask, config: ElectraConfig):
    """ELECTRA's dynamic masking (pretrain_helpers.py:mask), with static shapes throughout.

    Returns masked_ids [B, S], positions [B, N] and weights [B, N] (bool: the slot is real). N = max_predictions
    slots per sequence, by default int((mask_prob + 0.005) * S); the first max(1, min(N, round(mask_prob *
    num_tokens))) are real, the others point at position 0 ([CLS]), the null slot, which is never a candidate and
    never changes.
    """
    batch, seq_len = input_ids.shape
    num_slots = config.max_predictions or int((config.mask_prob + 0.005) * seq_len)
    if num_slots < 1:
        raise ValueError(f"sequence length {seq_len} is too short to mask any token at mask_prob {config.mask_prob}")
    special = (input_ids == config.cls_id) | (input_ids == config.sep_id) | (input_ids == config.mask_id)
    candidates = attention_mask.bool() & ~special  # real tokens that are not [CLS]/[SEP]/[MASK]
    candidates[:, 0] = False  # position 0 is the null slot
    # tf.random.categorical over the candidates, with replacement: a multinomial with a fixed number of draws has a
    # static [B, N] shape (no data-dependent nonzero()). A row without candidates draws only the null slot.
    probs = candidates.float()
    probs[:, 0] = 1.0 - candidates.any(dim=1).float()
    positions = torch.multinomial(probs, num_slots, replacement=True)  # [B, N]
    num_tokens = attention_mask.sum(dim=1).float()
    num_to_mask = torch.round(num_tokens * config.mask_prob).clamp(min=1, max=num_slots)  # round half to even, as TF
    slot = torch.arange(num_slots, device=input_ids.device)
    weights = (slot[None, :] < num_to_mask[:, None]) & (positions != 0)
    positions = positions * weights  # slots past num_to_mask point at the null slot
    # ELECTRA: 85% of the chosen slots become [MASK], the other 15% keep their token (no random replacement).
    # As scatter_update, a position drawn twice is masked if any of its slots is; writes to the null slot rewrite the
    # original [CLS], so every write to one position carries the same value (deterministic scatter).
    use_mask = weights & (torch.rand(batch, num_slots, device=input_ids.device) < 0.85)
    updates = torch.where(use_mask, config.mask_id, input_ids[:, :1])
    masked_ids = input_ids.scatter(1, positions * use_mask, updates)
    return masked_ids, positions, weights


def replace_tokens(input_ids, positions, weights, generator_logits, temperature: float = 1.0):
    """Fake input for the discriminator (run_pretraining.py:_get_fake_data): from the original (unmasked) ids, every
    real slot gets a token sampled from the generator by Gumbel-max; no gradient flows through the samples (detached).
    Returns fake_ids [B, S] and labels [B, S] (1 = replaced by a token different from the original)."""
    generator_logits = generator_logits.detach()  # not @torch.no_grad(): mutmut leaves decorated functions untested
    # sample_from_softmax: argmax(logits / T + G), G = -log(-log(U + 1e-9) + 1e-9), U uniform; in place, as
    # [B, N, V] is one of the largest tensors of the step.
    gumbel = torch.rand(generator_logits.shape, device=generator_logits.device)
    gumbel.add_(1e-9).log_().neg_().add_(1e-9).log_().neg_()
    sampled = gumbel.add_(generator_logits, alpha=1.0 / temperature).argmax(dim=-1)  # [B, N]
    # A position drawn in two slots gets the first slot's sample (scatter_update would average the two ids).
    first_slot = (positions[:, :, None] == positions[:, None, :]).float().argmax(dim=-1)  # [B, N, N] -> [B, N]
    sampled = sampled.gather(1, first_slot)
    fake_ids = input_ids.scatter(1, positions, torch.where(weights, sampled, input_ids[:, :1]))
    # Label = replaced AND different from the original: a correctly sampled token counts as original (not Electric).
    return fake_ids, (fake_ids != input_ids).long()


def generator_metrics(generator_logits, targets, weights) -> dict:
    """MLM loss sum(w * CE) / (sum(w) + 1e-6) over the slots (duplicates count, as in the official code) + accuracy."""
    weights = weights.float()
    cross_entropy = F.cross_entropy(generator_logits.flatten(0, 1).float(), targets.flatten(), reduction="none")
    denominator = weights.sum() + 1e-6
    correct = (generator_logits.argmax(dim=-1) == targets).float()
    return {"gen_loss": (weights * cross_entropy.view_as(weights)).sum() / denominator,
            "gen_accuracy": (weights * correct).sum() / denominator}


def discriminator_metrics(discriminator_logits, labels, attention_mask) -> dict:
    """Sigmoid BCE averaged over all non-padding tokens ([CLS]/[SEP] included) + the figures people watch."""
    real, labels = attention_mask.float(), labels.float()
    bce = F.binary_cross_entropy_with_logits(discriminator_logits.float(), labels, reduction="none")
    predicted = (discriminator_logits > 0).float()
    num_real = real.sum() + 1e-6
    true_positives = (real * predicted * labels).sum()
    return {"disc_loss": (real * bce).sum() / num_real,
            "disc_accuracy": (real * (predicted == labels).float()).sum() / num_real,
            "disc_precision": true_positives / ((real * predicted).sum() + 1e-6),
            "disc_recall": true_positives / ((real * labels).sum() + 1e-6),
            "replaced_fraction": (real * labels).sum() / num_real}


def roc_auc(scores, labels) -> float:
    """Exact ROC AUC of `scores` for binary `labels` (CPU tensors; entries labelled -1 are left out): the
    Mann-Whitney U statistic with tied scores given their average rank, i.e. P(score of a positive > score of a
    negative) + P(tie) / 2. NaN when one class is absent. The official `disc_auc` is tf.metrics.auc, a 200-threshold
    approximation over every position (padding scored 0 as original); this one is exact, over the tokens passed."""
    keep = labels >= 0
    scores, positive = scores[keep].double(), labels[keep] == 1
    num_positive = int(positive.sum())
    num_negative = len(scores) - num_positive
    if num_positive == 0 or num_negative == 0:
        return float("nan")
    sorted_scores, order = scores.sort(stable=True)
    _, group, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    last_rank = counts.cumsum(0).double()  # 1-based rank of each group of equal scores' last member
    average_rank = (last_rank - (counts - 1) / 2)[group]  # [n]: the rank of each sorted score, ties averaged
    positive_rank_sum = average_rank[positive[order]].sum().item()
    return (positive_rank_sum - num_positive * (num_positive + 1) / 2) / (num_positive * num_negative)


class ElectraForPretraining(nn.Module):
    """Generator + discriminator sharing one embedding block. `model(input_ids, attention_mask, token_type_ids)`
    returns 0-d tensors: loss, gen_loss, gen_accuracy and, for the "electra" objective, disc_loss, disc_accuracy,
    disc_precision, disc_recall, replaced_fraction, plus two [B, S] tensors for `roc_auc` on the host: disc_logits
    (detached) and disc_labels (1 replaced, 0 original, -1 padding/[CLS]/[SEP], which are not scored). For "mlm" the
    generator is discriminator-sized and
    `discriminator` is None. Randomness comes from torch's default generator of the inputs' device."""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)  # modeling.py: one set of variables under "electra/embeddings"
        self.generator = Generator(config.generator_config(), self.embeddings)
        self.discriminator = Discriminator(config, self.embeddings) if config.objective == "electra" else None

    def forward(self, input_ids, attention_mask, token_type_ids):
        if self.generator is None:
            raise ValueError("this model was loaded without a generator: use model.discriminator (fine-tuning)")
        masked_ids, positions, weights = mask_tokens(input_ids, attention_mask, self.config)
        generator_logits = self.generator(masked_ids, attention_mask, token_type_ids, positions)  # [B, N, V]
        out = generator_metrics(generator_logits, input_ids.gather(1, positions), weights)
        if self.discriminator is None:
            return {"loss": out["gen_loss"], **out}
        fake_ids, labels = replace_tokens(input_ids, positions, weights, generator_logits, self.config.temperature)
        discriminator_logits = self.discriminator(fake_ids, attention_mask, token_type_ids)  # [B, S]
        out.update(discriminator_metrics(discriminator_logits, labels, attention_mask))
        scored = attention_mask.bool() & (input_ids != self.config.cls_id) & (input_ids != self.config.sep_id)
        out["disc_logits"], out["disc_labels"] = discriminator_logits.detach(), torch.where(scored, labels, -1)
        out["loss"] = self.config.gen_weight * out["gen_loss"] + self.config.disc_weight * out["disc_loss"]
        return out


# ------------------------------------------------------------------------------- checkpoints in HuggingFace's format
# Our config field -> transformers' ElectraConfig key (config.json).
_HF_CONFIG = {"vocab_size": "vocab_size", "embedding_size": "embedding_size", "hidden_size": "hidden_size",
              "num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
              "intermediate_size": "intermediate_size", "max_position_embeddings": "max_position_embeddings",
              "type_vocab_size": "type_vocab_size", "dropout": "hidden_dropout_prob",
              "attention_dropout": "attention_probs_dropout_prob", "initializer_range": "initializer_range",
              "layer_norm_eps": "layer_norm_eps", "pad_id": "pad_token_id"}
# Pre-training fields transformers has no key for: kept under "electramed" in config.json (HF keeps unknown keys).
_OUR_CONFIG = ["mask_prob", "gen_weight", "disc_weight", "temperature", "disc_prior_bias", "max_predictions",
               "objective", "cls_id", "sep_id", "mask_id"]
# Our transformer-layer names -> transformers' (modeling_electra.py: ElectraLayer).
_HF_LAYER = {".attention_dense.": ".attention.output.dense.", ".attention_norm.": ".attention.output.LayerNorm.",
             ".intermediate.": ".intermediate.dense.", ".output_dense.": ".output.dense.",
             ".output_norm.": ".output.LayerNorm."}
_QKV = ("query", "key", "value")


def _hf_name(key: str, network: nn.Module) -> str:
    """Our state-dict key -> transformers' key ("...qkv..." stands for the three query/key/value keys)."""
    if key.startswith("encoder.layers."):
        key = "electra.encoder.layer." + key[len("encoder.layers."):]
        for ours, theirs in _HF_LAYER.items():
            key = key.replace(ours, theirs)
        return key
    if key.startswith("encoder."):
        return "electra." + key[len("encoder."):].replace("embeddings.layer_norm.", "embeddings.LayerNorm.")
    prefix = next(prefix for prefix in network.hf_heads if key.startswith(prefix))
    return network.hf_heads[prefix] + key[len(prefix):]


def _to_hf(network: nn.Module) -> dict:
    """A Discriminator's or Generator's weights under ElectraForPreTraining's / ElectraForMaskedLM's keys."""
    state = {}
    for key, tensor in network.state_dict().items():
        name = _hf_name(key, network)
        if ".qkv." in name:  # fused [3H, H] -> query, key, value [H, H] each, views of the tensor on the host
            for part, chunk in zip(_QKV, tensor.cpu().chunk(3)):  # (on XLA, each slice would be a graph to compile)
                state[name.replace(".qkv.", f".attention.self.{part}.")] = chunk
        else:
            state[name] = tensor
    return state


def _load_hf(network: nn.Module, hf_state: dict, path: Path):
    """Copy transformers-named weights into `network`; any missing, unexpected or mis-shaped key is one clear error."""
    # Old checkpoints carry HF's position_ids/token_type_ids buffers; the tied generator_lm_head.weight is the shared
    # word-embedding matrix (HF omits it when saving; old checkpoints may have it).
    hf_state = {key: value for key, value in hf_state.items() if not key.endswith(
        ("embeddings.position_ids", "embeddings.token_type_ids", "generator_lm_head.weight"))}
    expected = _to_hf(network)
    missing = sorted(expected.keys() - hf_state.keys())
    unexpected = sorted(hf_state.keys() - expected.keys())
    mis_shaped = [f"{key} {tuple(hf_state[key].shape)} (model: {tuple(expected[key].shape)})"
                  for key in sorted(expected.keys() & hf_state.keys()) if hf_state[key].shape != expected[key].shape]
    if missing or unexpected or mis_shaped:
        problems = [f"{label}: {', '.join(keys[:10])}{' ...' if len(keys) > 10 else ''}" for label, keys in
                    (("missing", missing), ("unexpected", unexpected), ("wrong shape", mis_shaped)) if keys]
        raise ValueError(f"{path}: checkpoint does not match the model config ({'; '.join(problems)})")
    state = {}
    for key in network.state_dict():
        name = _hf_name(key, network)
        if ".qkv." in name:
            state[key] = torch.cat([hf_state[name.replace(".qkv.", f".attention.self.{part}.")] for part in _QKV])
        else:
            state[key] = hf_state[name]
    network.load_state_dict(state)


def _hf_config(config: ElectraConfig, architecture: str) -> dict:
    hf = {"architectures": [architecture], "model_type": "electra", "hidden_act": "gelu",
          "position_embedding_type": "absolute"}
    hf.update({theirs: getattr(config, ours) for ours, theirs in _HF_CONFIG.items()})
    hf["electramed"] = {name: getattr(config, name) for name in _OUR_CONFIG}
    return hf


def save_pretrained(model: ElectraForPretraining, directory, vocab_path=None):
    """Write directory/discriminator/ (ElectraForPreTraining keys) and directory/generator/ (ElectraForMaskedLM
    keys), each a transformers directory: config.json with its own sizes, pytorch_model.bin, vocab.txt if given."""
    directory = Path(directory)
    for name, network, architecture, config in (
            ("discriminator", model.discriminator, "ElectraForPreTraining", model.config),
            ("generator", model.generator, "ElectraForMaskedLM", model.config.generator_config())):
        if network is None:
            continue
        save_hf(network, config, architecture, directory / name, vocab_path)


def save_hf(network: nn.Module, config: ElectraConfig, architecture: str, directory, vocab_path=None, extra=None):
    """One transformers directory for `network` (a module with `encoder` and `hf_heads`: the pre-training networks
    here, the fine-tuning heads of tasks.py): config.json (plus `extra` keys, e.g. id2label), pytorch_model.bin, and
    vocab.txt if given."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    hf = {**_hf_config(config, architecture), **(extra or {})}
    (directory / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    torch.save({name: tensor.detach().cpu().clone() for name, tensor in _to_hf(network).items()},
               directory / "pytorch_model.bin")
    if vocab_path is not None:
        shutil.copyfile(vocab_path, directory / "vocab.txt")


def read_hf_config(directory) -> tuple[ElectraConfig, dict]:
    """One transformers ELECTRA directory's config as ours, and its config.json as read (id2label, architectures)."""
    directory = Path(directory)
    hf = _read_config(directory)
    fields = {ours: hf[theirs] for ours, theirs in _HF_CONFIG.items()}
    fields.update(_special_ids(directory))
    fields.update(hf.get("electramed", {}))
    return ElectraConfig(**fields), hf


def load_hf_weights(network: nn.Module, directory):
    """Load a transformers directory's weights into `network` (strict: any key mismatch is one ValueError)."""
    _load_hf(network, *_read_weights(Path(directory)))


def _read_config(directory: Path) -> dict:
    path = directory / "config.json"
    if not path.is_file():
        raise ValueError(f"{path}: not found (expected a transformers ELECTRA directory)")
    try:
        hf = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}: not valid JSON ({error.msg}, column {error.colno})") from None
    missing = [key for key in _HF_CONFIG.values() if key not in hf]
    if hf.get("model_type") != "electra" or missing or hf.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"{path}: not an ELECTRA config with hidden_act gelu (model_type {hf.get('model_type')!r}, "
                         f"missing {missing})")
    return hf


def _read_weights(directory: Path) -> tuple[dict, Path]:
    safetensors_path, bin_path = directory / "model.safetensors", directory / "pytorch_model.bin"
    if safetensors_path.is_file():
        try:
            from safetensors import SafetensorError  # optional: not a core dependency
            from safetensors.torch import load_file
        except ImportError:
            if not bin_path.is_file():
                raise ValueError(f"{safetensors_path}: reading it needs the safetensors package") from None
        else:
            try:
                return load_file(safetensors_path), safetensors_path
            except (SafetensorError, OSError) as error:  # e.g. a download cut short
                raise ValueError(f"{safetensors_path}: cannot be read as weights ({error})") from None
    if bin_path.is_file():
        try:
            state = torch.load(bin_path, map_location="cpu", weights_only=True)
        except Exception as error:  # cut short, or not torch's: unpickling a stray file raises almost anything
            raise ValueError(f"{bin_path}: cannot be read as weights (not a complete torch.save file of tensors: "
                             f"{type(error).__name__})") from None
        if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
            raise ValueError(f"{bin_path}: cannot be read as weights (holds a {type(state).__name__}, not named "
                             "tensors)")
        return state, bin_path
    raise ValueError(f"{directory}: no pytorch_model.bin or model.safetensors")


def _special_ids(directory: Path) -> dict:
    """[CLS]/[SEP]/[MASK] ids from a vocab.txt beside the weights (checkpoints not written by us)."""
    vocab = directory / "vocab.txt"
    if not vocab.is_file():
        return {}
    ids = {line.rstrip("\r\n"): i for i, line in enumerate(vocab.read_text(encoding="utf-8").splitlines())}
    names = {"cls_id": "[CLS]", "sep_id": "[SEP]", "mask_id": "[MASK]"}
    return {field: ids[token] for field, token in names.items() if token in ids}


def load_pretrained(directory) -> ElectraForPretraining:
    """Read a save_pretrained directory (discriminator/ + generator/), or one transformers ELECTRA directory:
    a discriminator (what people download to fine-tune; the returned model's `generator` is None) or a generator
    alone (an "mlm" model). Weights from model.safetensors or pytorch_model.bin."""
    directory = Path(directory)
    disc_dir, gen_dir = directory / "discriminator", directory / "generator"
    if disc_dir.is_dir() or gen_dir.is_dir():
        disc_dir, gen_dir = (disc_dir if disc_dir.is_dir() else None), (gen_dir if gen_dir.is_dir() else None)
    elif "ElectraForMaskedLM" in _read_config(directory).get("architectures", []):
        disc_dir, gen_dir = None, directory
    else:
        disc_dir, gen_dir = directory, None
    config, _ = read_hf_config(disc_dir or gen_dir)
    changes = {"objective": "electra" if disc_dir else "mlm"}
    if disc_dir and gen_dir:
        generator = _read_config(gen_dir)  # the generator's own sizes
        changes.update({f"generator_{ours}": generator[_HF_CONFIG[ours]]
                        for ours in ("hidden_size", "num_heads", "num_layers", "intermediate_size")})
    model = ElectraForPretraining(replace(config, **changes))
    if gen_dir:
        _load_hf(model.generator, *_read_weights(gen_dir))
        generator_embeddings = model.embeddings.word_embeddings.weight.clone()
    if disc_dir:  # loaded last: its copy of the shared embeddings is the one kept
        _load_hf(model.discriminator, *_read_weights(disc_dir))
        if gen_dir and not torch.equal(generator_embeddings, model.embeddings.word_embeddings.weight):
            warnings.warn(f"{directory}: generator and discriminator word embeddings differ; ELECTRA shares them, "
                          "the discriminator's are used")
        if not gen_dir:
            model.generator = None
    return model.eval()  # as transformers' from_pretrained: dropout off until the caller asks for .train()


"""Fine-tuning ELECTRAMed: heads, featurizing, decoding, the training loop (using the result: inference.py).

    python train.py finetune --task ner --data ../shared/data/ner/NCBI-disease --init runs/pretrain/electramed-hf \
        --out runs/ner

What it follows:
- Miolo et al. (2021), ELECTRAMed, Table 5: the fine-tuning hyper-parameters (`FinetuneConfig`); several seeds and
  the paper's tables are reproduce.py's.
- google-research/electra: finetune/ (the tagging and QA heads; the RE head is transformers', see SentenceClassifier),
  model/optimization.py (AdamWeightDecay with layer-wise learning-rate decay, clipping 1.0), configure_finetuning.py
  (epochs, warm-up share).
- transformers' ElectraFor{TokenClassification,SequenceClassification,QuestionAnswering}: the weight names, so that a
  fine-tuned model is a directory transformers loads.

The loop is shared by all tasks; the task-specific parts are three functions that branch on the task: `featurize`,
`build_model` and `evaluate` (plus `read_examples` for a single file); the labels come from the training data
(`benchmarks.label_list`).
"""
import json
import math
import os
import shutil
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

import benchmarks
import metrics
import qa
from data import file_digest, read_json_or_none
from electramed import (Embeddings, Encoder, Layer, dropout, init_weights, load_hf_weights, load_pretrained,
                        read_hf_config, save_hf)
from runtime import (AdamWeightDecay, MetricsLog, StopOnSignal, device_scalar, linear_schedule, load_checkpoint,
                     save_atomic, seed_everything, setup_runtime, step_seed, sync, to_cpu, xla_count)
from tokenizer import InputError, WordPieceTokenizer, read_vocab

ARCHITECTURES = {"ner": "ElectraForTokenClassification", "re": "ElectraForSequenceClassification",
                 "qa": "ElectraForQuestionAnswering"}


# ------------------------------------------------------------------------------------------------------------- heads
class TokenTagger(nn.Module):
    """NER: hidden states -> dropout -> linear, one score per label per token (ElectraForTokenClassification)."""
    hf_heads = {"classifier.": "classifier."}

    def __init__(self, encoder: Encoder, config, num_labels: int):
        super().__init__()
        self.encoder, self.config = encoder, config
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        init_weights(self.classifier, config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):  # -> [B, S, labels]
        hidden = self.encoder(input_ids, attention_mask, token_type_ids)
        return self.classifier(dropout(hidden, self.config.dropout, self.training))

    def loss(self, logits, batch):  # mean over the labelled tokens (first piece of each word)
        labels = batch["labels"].flatten()
        total = F.cross_entropy(logits.flatten(0, 1).float(), labels, ignore_index=-100, reduction="sum")
        return total / (labels != -100).sum().clamp(min=1)


class SentenceClassifier(nn.Module):
    """RE: [CLS] -> dropout -> dense -> GELU -> dropout -> out_proj (transformers' ElectraClassificationHead).

    ELECTRAMed's own RE runs use this head: its run_tf_text_classification.py fine-tunes transformers'
    TFElectraForSequenceClassification. (google-research/electra's classification head is [CLS] -> dropout ->
    dense(num_labels), electra-facts #17.) A saved model loads as ElectraForSequenceClassification."""
    hf_heads = {"dense.": "classifier.dense.", "out_proj.": "classifier.out_proj."}

    def __init__(self, encoder: Encoder, config, num_labels: int):
        super().__init__()
        self.encoder, self.config = encoder, config
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, num_labels)
        init_weights(self.dense, config.initializer_range)
        init_weights(self.out_proj, config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):  # -> [B, labels]
        cls = self.encoder(input_ids, attention_mask, token_type_ids)[:, 0]  # [B, S, H] -> [B, H]
        hidden = F.gelu(self.dense(dropout(cls, self.config.dropout, self.training)))
        return self.out_proj(dropout(hidden, self.config.dropout, self.training))

    def loss(self, logits, batch):
        return F.cross_entropy(logits.float(), batch["labels"])


class SpanQA(nn.Module):
    """QA: hidden states -> linear(2): start and end scores per token (ElectraForQuestionAnswering)."""
    hf_heads = {"qa_outputs.": "qa_outputs."}

    def __init__(self, encoder: Encoder, config):
        super().__init__()
        self.encoder, self.config = encoder, config
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        init_weights(self.qa_outputs, config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):  # -> [B, S, 2] (start, end)
        return self.qa_outputs(self.encoder(input_ids, attention_mask, token_type_ids))

    def loss(self, logits, batch):  # BERT run_squad: the mean of the start and end cross-entropies
        return (F.cross_entropy(logits[..., 0].float(), batch["start_positions"]) +
                F.cross_entropy(logits[..., 1].float(), batch["end_positions"])) / 2


def build_model(task, encoder, config, labels):
    if task == "ner":
        return TokenTagger(encoder, config, len(labels))
    if task == "re":
        return SentenceClassifier(encoder, config, len(labels))
    if task == "qa":
        return SpanQA(encoder, config)
    raise ValueError(f"unknown task {task!r}")


# -------------------------------------------------------------------------------------------------- saving, loading
def save_finetuned(model, directory, labels, vocab_path, config, word_split=None):
    """A transformers directory (config.json with id2label/label2id, pytorch_model.bin, vocab.txt), written beside
    and renamed into place: a crash never leaves a half-written model. The FinetuneConfig's example sizes go into
    config.json as "electramed_windows": evaluate and predict read examples as the model was trained on them."""
    directory = Path(directory)
    task = next(task for task, head in (("ner", TokenTagger), ("re", SentenceClassifier), ("qa", SpanQA))
                if isinstance(model, head))
    extra = {}
    if task != "qa":
        extra = {"id2label": {str(i): label for i, label in enumerate(labels)},
                 "label2id": {label: i for i, label in enumerate(labels)}}
    extra["electramed_windows"] = {key: getattr(config, key) for key in WINDOW_KEYS[task]}
    if word_split:  # NER: how the training corpus split its words (benchmarks.word_split), for predict on raw text
        extra["electramed_word_split"] = word_split
    temporary = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    save_hf(model, model.config, ARCHITECTURES[task], temporary, vocab_path, extra)
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(temporary, directory)


def check_model_folder(directory):
    """A folder, not one of our run folders: those hold their model one level down (pretrain's OUT/electramed-hf,
    finetune's OUT/best, --seeds' OUT/seed_0/best) beside a config.json without "architectures": name it instead."""
    if not directory.is_dir():
        raise InputError(f"{directory}: " + ("a file, not a model folder" if directory.exists() else "no such folder"))
    inside = next((directory / n for n in ("electramed-hf", "best", "seed_0/best") if (directory / n).is_dir()), None)
    if inside is not None and "architectures" not in (read_json_or_none(directory / "config.json") or {}):
        raise InputError(f"{directory}: a run folder, not a model directory: the model in it is {inside}")


def load_finetuned(directory):
    """(model, labels, task) from our fine-tuned directory or a transformers-made ElectraFor{Token,Sequence}
    Classification / ElectraForQuestionAnswering one. Raises InputError if it is neither."""
    directory = Path(directory)
    check_model_folder(directory)
    if (directory / "discriminator").is_dir():
        raise InputError(f"{directory}: a pre-trained model (discriminator/, generator/), not a fine-tuned one: "
                         "run `train.py finetune --init` on it first")
    try:
        config, hf = read_hf_config(directory)
        architecture = (hf.get("architectures") or ["none"])[0]
        task = next((task for task, name in ARCHITECTURES.items() if name == architecture), None)
        if task is None:
            raise ValueError(f"{directory / 'config.json'}: architecture {architecture} is not a fine-tuned model "
                             f"({', '.join(ARCHITECTURES.values())})")
        id2label = hf.get("id2label") or {}
        labels = [id2label[str(i)] for i in range(len(id2label))] if task != "qa" else []
        model = build_model(task, Encoder(config), config, labels)
        load_hf_weights(model, directory)
    except (ValueError, KeyError, OSError) as error:
        raise InputError(str(error)) from None
    if (directory / "vocab.txt").is_file():  # (needed by evaluate and predict, which say so when it is missing)
        check_vocab(directory / "vocab.txt", config)
    return model, labels, task


def network_folder(directory):
    """The folder of the network fine-tuning starts from: save_pretrained's layout is discriminator/ + generator/,
    or generator/ alone for an "mlm" model; anything else is one transformers directory."""
    return next((directory / net for net in ("discriminator", "generator") if (directory / net).is_dir()), directory)


def weights_digest(directory):
    """SHA-1 of the weights fine-tuning from `directory` reads. Work on the same --init path is resumed or kept only
    for the same weights: an export or `pretrain --resume` may have replaced the model there since."""
    folder = network_folder(Path(directory))
    digests = [file_digest(folder / name) for name in ("model.safetensors", "pytorch_model.bin")
               if (folder / name).is_file()]  # both, when both are there: either may be the one read
    return "+".join(digests) or None


def load_init(directory):
    """(encoder, config, vocab.txt, fine-tuned model or None) to fine-tune from: a pre-trained directory (ours or any
    transformers ELECTRA discriminator) or a fine-tuned one (SQuAD -> BioASQ: its answer head is kept, see finetune)."""
    directory = Path(directory)
    check_model_folder(directory)
    main = network_folder(directory)
    if not (main / "config.json").is_file():
        raise InputError(f"{main}: not a model directory (no config.json)")
    if main.name == "generator" and (read_json_or_none(main / "config.json") or {}).get(
            "electramed", {}).get("objective") == "electra":  # ELECTRA fine-tunes the discriminator, never this
        raise InputError(f"{directory}: no discriminator/ (its generator/ is not what fine-tuning starts from)")
    vocab = main / "vocab.txt"
    if not vocab.is_file():
        raise InputError(f"{vocab}: not found (the model directory needs its WordPiece vocabulary)")
    try:
        if (read_hf_config(main)[1].get("architectures") or [""])[0] in ARCHITECTURES.values():
            model = load_finetuned(main)[0]
            return model.encoder, model.config, vocab, model
        pretrained = load_pretrained(main)  # that network alone: a damaged generator/ does not stop fine-tuning
    except (ValueError, KeyError, OSError) as error:  # InputError included: one line, the file named
        raise InputError(str(error)) from None
    network = pretrained.discriminator if pretrained.discriminator is not None else pretrained.generator
    check_vocab(vocab, pretrained.config)
    return network.encoder, pretrained.config, vocab, None


def check_vocab(vocab_path, config):
    """A vocab.txt with more tokens than the embeddings have rows would index past them, mid-run."""
    if (tokens := len(read_vocab(vocab_path))) > config.vocab_size:
        raise InputError(f"{vocab_path}: {tokens} tokens, but the model's embeddings have {config.vocab_size} rows "
                         "(it belongs with another model)")


def check_length(max_length, model_config, model_dir):
    """Examples longer than the position table would fail mid-run (transformers' ELECTRA may have fewer than 512)."""
    if max_length > model_config.max_position_embeddings:
        raise InputError(f"--max-length {max_length}: longer than the position table of {model_dir} "
                         f"({model_config.max_position_embeddings} positions)")


def set_dropout(model, config, p):
    """Table 5: dropout and attention dropout 0.1 in fine-tuning, whatever the pre-training config said."""
    for module in model.modules():
        if isinstance(module, (Embeddings, Layer)):
            module.hidden_dropout = p
        if isinstance(module, Layer):
            module.attention_dropout = p
    return replace(config, dropout=p, attention_dropout=p)


# -------------------------------------------------------------------------------------------------------- examples
def read_examples(task, path, labels=None):
    """One data file of a task (evaluate); a label outside the model's `labels` is an error."""
    if task == "ner":
        return benchmarks.read_ner(path, set(labels))  # names the file and line of an unknown tag
    if task == "re":
        return benchmarks.read_re(path, set(labels))  # names the file and line of an unknown label
    if task == "qa":
        return benchmarks.read_squad(path)
    raise InputError(f"evaluate --data: task {task} is not supported here")


# ------------------------------------------------------------------------------------------------------ featurizing
def featurize(task, examples, tokenizer, labels, config, training=False):
    if task == "ner":
        return benchmarks.ner_features(examples, tokenizer, labels, config.max_length)
    if task == "re":
        return benchmarks.re_features(examples, tokenizer, labels, config.max_length)
    if task == "qa":
        return qa.qa_featurize(examples, tokenizer, config, training)
    raise ValueError(f"unknown task {task!r}")


SEQUENCE_KEYS = {"input_ids": 0, "token_type_ids": 0, "labels": -100}  # per-token inputs and their padding value
MODEL_KEYS = ("input_ids", "token_type_ids", "labels", "start_positions", "end_positions")


def collate(features, pad_to=None):
    """A batch of tensors padded to its longest sequence, or to `pad_to` (see pad_to). Padding is masked out of
    attention, so the real tokens' outputs are the same either way; only QA's loss sees the padding's logits."""
    length = pad_to or max(len(f["input_ids"]) for f in features)
    batch = {}
    for key in MODEL_KEYS:
        if key not in features[0]:
            continue
        if isinstance(features[0][key], list):
            pad = SEQUENCE_KEYS[key]
            batch[key] = torch.tensor([f[key] + [pad] * (length - len(f[key])) for f in features])
        else:
            batch[key] = torch.tensor([f[key] for f in features])
    batch["attention_mask"] = (torch.arange(length)[None, :] <
                               torch.tensor([len(f["input_ids"]) for f in features])[:, None]).long()
    return batch


# --------------------------------------------------------------------------------------------- prediction, scoring
@torch.no_grad()
def predict_logits(model, features, batch_size, device, pad_to=None, desc="predict"):
    """Logits per feature on the CPU, token-level ones cut to the feature's length."""
    model.eval()
    outputs = []
    for start in tqdm(range(0, len(features), batch_size), desc=desc, unit="batch", leave=False):
        chunk = features[start:start + batch_size]
        batch = {k: v.to(device) for k, v in collate(chunk, pad_to).items()}
        logits = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")).float().cpu()
        outputs += [row[:len(f["input_ids"])] if row.ndim > 1 else row for row, f in zip(logits, chunk)]
    return outputs


def decode_tags(sentences, features, logits, labels):
    """One tag per original word: each word is read from the one window that predicts it."""
    tags = [[None] * len(words) for words, _ in sentences]
    for feature, scores in zip(features, logits):
        for position, word in feature["words"]:
            tags[feature["example_index"]][word] = labels[int(scores[position].argmax())]
    assert all(tag is not None for sentence in tags for tag in sentence), "a word without a prediction"
    return tags


def negative_label(labels):
    """BLUE scores RE over the positive classes only: ChemProt's "false", DDI's "DDI-false" (none in SciBERT's)."""
    return {label for label in labels if label.lower().endswith("false")}


def evaluate(task, model, examples, features, labels, config, device, golden=None):
    """(scores, predictions) of one split: precision/recall/f1 as fractions and a per type/class table; QA: see
    qa.qa_evaluate (`golden`: BioASQ golden answers per test batch)."""
    logits = predict_logits(model, features, config.batch_size, device, pad_to(config, device), desc="evaluate")
    if task == "qa":
        return qa.qa_evaluate(examples, features, logits, golden)
    if task == "ner":
        predictions = decode_tags(examples, features, logits, labels)
        gold = [tags for _, tags in examples]
        precision, recall, f1 = metrics.entity_prf(gold, predictions)
        table = metrics.entity_table(gold, predictions)
    elif task == "re":
        predictions = [labels[int(row.argmax())] for row in logits]
        gold, negative = [example[2] for example in examples], negative_label(labels)
        precision, recall, f1 = metrics.re_prf(gold, predictions, negative)
        table = metrics.re_table(gold, predictions, negative)
    else:
        raise ValueError(f"unknown task {task!r}")
    return {"precision": precision, "recall": recall, "f1": f1, "table": table}, predictions


# ------------------------------------------------------------------------------------------------------ fine-tuning
@dataclass
class FinetuneConfig:
    """Paper Table 5 (NER/RE column) unless noted; `DEFAULTS` holds the QA columns."""
    learning_rate: float = 5e-5  # Table 5: NER/RE 5e-5, SQuAD 3e-5, BioASQ 5e-6
    batch_size: int = 32  # Table 5: NER/RE 32, QA 16
    max_length: int = 128  # Table 5: NER/RE 128, QA 384
    epochs: int = 3  # not in the paper: configure_finetuning.py num_train_epochs 3 (SQuAD 2); BioASQ 3, run_factoid.py
    layerwise_decay: float = 0.8  # Table 5, configure_finetuning.py layerwise_lr_decay
    warmup_proportion: float = 0.1  # not in the paper: configure_finetuning.py warmup_proportion
    weight_decay: float = 0.0  # Table 5 (the official code uses 0.01)
    dropout: float = 0.1  # Table 5: dropout and attention dropout
    adam_beta1: float = 0.9  # Table 5
    adam_beta2: float = 0.999  # Table 5
    adam_epsilon: float = 1e-6  # Table 5
    clip_norm: float = 1.0  # optimization.py clips the global norm at 1.0 in fine-tuning too
    doc_stride: int = 128  # QA only (Table 5)
    max_query_length: int = 64  # QA only (configure_finetuning.py)
    seed: int = 12345
    max_train_examples: int | None = None  # quick looks only: the first N training examples
    max_eval_examples: int | None = None  # quick looks only: the first N dev/test examples (scores not comparable)


WINDOW_KEYS = {"ner": ("max_length",), "re": ("max_length",), "qa": ("max_length", "doc_stride", "max_query_length")}
DEFAULTS = {"ner": FinetuneConfig(), "re": FinetuneConfig(),
            "squad": FinetuneConfig(learning_rate=3e-5, batch_size=16, max_length=384, epochs=2),
            "bioasq": FinetuneConfig(learning_rate=5e-6, batch_size=16, max_length=384)}


def pad_to(config, device, task=None):
    """The padded length of a batch: its longest sequence (None), or max_length on XLA (static shapes) and for QA
    training everywhere: BERT's run_squad (ELECTRAMed's run_factoid) takes the start/end softmax over all max_length
    positions, padding included, so a shorter padding would change the loss. NER and RE losses never see padding."""
    return config.max_length if device.type == "xla" or task == "qa" else None


def layer_depth(name, num_layers):
    """optimization.py _get_layer_lrs: embeddings (and their projection) 0, transformer layer i -> i + 1, the task
    head n + 2."""
    if name.startswith(("encoder.embeddings.", "encoder.embeddings_project.")):
        return 0
    if name.startswith("encoder.layers."):
        return int(name.split(".")[2]) + 1
    return num_layers + 2


def finetune_parameter_groups(model, layerwise_decay, weight_decay):
    """One group per (depth, decayed or not): lr_scale = decay ** (n + 2 - depth). As the official code, the head
    gets 1 and the TOP LAYER decay ** 2, not decay: depth n + 1 is skipped because ELECTRA removed BERT's pooler
    (google-research/electra issue #51). We keep the off-by-one on purpose: it is the official code's, and that of
    ELECTRAMed's QA runs (its model/optimization.py). Its NER and RE scripts ran through transformers' TFTrainer, whose
    default optimizer has no layer-wise decay (and Adam's bias correction); Table 5 gives layer-wise decay 0.8 for
    fine-tuning, so every task gets it here. No weight decay on LayerNorm weights and biases (the 1-D tensors), as
    optimization.py."""
    num_layers, groups = len(model.encoder.layers), {}
    for name, param in model.named_parameters():
        depth, decay = layer_depth(name, num_layers), weight_decay if param.ndim >= 2 else 0.0
        group = groups.setdefault((depth, decay), {"params": [], "names": [], "weight_decay": decay,
                                                   "lr_scale": layerwise_decay ** (num_layers + 2 - depth)})
        group["params"].append(param)
        group["names"].append(name)
    return list(groups.values())


FINETUNE_CHECKPOINT_KEYS = ("model", "optimizer", "step", "epoch", "best", "loss_sum", "labels", "finetune")
LOSS_READ_EVERY = 10  # steps between the progress bar's readings of the running loss (each one a host sync)


def changed_settings(saved, now):
    changed = {key: value for key, value in now.items() if saved.get(key) != value}
    if "init" in changed:  # another path: its weights differ too, no need to say so
        changed.pop("init_sha1", None)
    return ", ".join("the weights at --init (another SHA-1)" if key == "init_sha1" else
                     f"{key} {saved.get(key)} -> {value}" for key, value in changed.items())


def train_step(model, optimizer, batch, lr, clip_norm):
    """One optimizer step: forward, the head's loss, backward, clip the global norm (optimization.py clips in
    fine-tuning too), ELECTRA's Adam at `lr` (a tensor). Returns the loss, detached."""
    loss = model.loss(model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")), batch)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    optimizer.step(lr)
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def stop_with_checkpoint(stop, model, optimizer, step, epoch, best, loss_sum, labels, config, checkpoint):
    """Save what `finetune --resume` needs to go on from `step` in `epoch`, then exit 130 (SIGINT) or 143 (SIGTERM)."""
    save_atomic({"model": to_cpu(model.state_dict()), "optimizer": to_cpu(optimizer.state_dict()), "step": step,
                 "epoch": epoch, "best": best, "loss_sum": loss_sum, "labels": labels, "finetune": asdict(config)},
                checkpoint)
    print(f"stopped at step {step}; `finetune --resume` (or `reproduce` again) continues", file=sys.stderr)
    raise SystemExit(stop.exit_code)


def finetune(task, data_dir, init, out, config: FinetuneConfig, device_name="cpu", splits=None, resume=False):
    """Fine-tune `init` on data_dir's train split, pick the epoch with the best dev F1, score test once with it.
    Writes OUT/metrics.jsonl (a line per epoch; TensorBoard events beside it when installed), OUT/best/ (transformers
    directory), OUT/result.json; returns the result. `splits` ({"train","dev","test"}) replaces reading data_dir
    (QA's SQuAD -> BioASQ, tests). SIGINT/SIGTERM: the step ends, OUT/checkpoint.pt is written, and the process exits
    130/143; `resume` continues from it (the batch order and dropout depend only on the seed and the step)."""
    data_dir, out = Path(data_dir), Path(out)
    finished, checkpoint = read_json_or_none(out / "result.json"), out / "checkpoint.pt"
    if not resume and (finished or checkpoint.is_file()):  # a new run would mix its files with the earlier one's
        raise InputError(f"{out}: holds a " + ("finished run (result.json); pass --resume to keep it" if finished else
                         "stopped run (checkpoint.pt); pass --resume to continue it") + ", or another --out")
    digest = weights_digest(init) if Path(init).is_dir() else None  # (a bad --init is named by load_init below)
    if finished:  # the same data and model (wherever the command is run from) and the same settings, or refused
        where = {key: str(Path(finished.get(key, "")).resolve()) for key in ("data", "init")}
        now = {"data": str(data_dir.resolve()), "init": str(Path(init).resolve()), **asdict(config)}
        if "init_sha1" in finished and digest:  # (older runs have only the path; a moved --init is not "other")
            where["init_sha1"], now["init_sha1"] = finished["init_sha1"], digest
        if changed := changed_settings({**where, **finished.get("finetune", {})}, now):
            raise InputError(f"{out / 'result.json'}: finished with other settings ({changed}); pass another --out")
        print(f"{out}: already finished (result.json); nothing to resume")
        return finished
    if splits is None:  # everything is validated ...
        splits = qa.qa_splits([data_dir]) if task == "qa" else benchmarks.task_splits(task, data_dir)
    for name in ("train",) if task == "qa" else ("train", "dev", "test"):  # QA: dev and test optional (qa_splits)
        if not splits.get(name):
            raise InputError(f"{data_dir}: the {name} split is empty")
    encoder, model_config, vocab, init_model = load_init(init)
    check_length(config.max_length, model_config, init)
    labels = benchmarks.label_list(splits["train"])  # "O" first, then sorted; they travel with the model
    if (task == "ner" and labels == ["O"]) or (task == "re" and set(labels) <= negative_label(labels)):
        raise InputError(f"{data_dir} (train): no {'entity tags, only O' if task == 'ner' else 'relation but ' + labels[0]}"
                         ": nothing to learn, and F1 scores no entity or relation")
    for name in ("dev", "test"):
        benchmarks.check_labels(splits[name], labels, f"{data_dir} ({name})")
    tokenizer = WordPieceTokenizer(vocab)
    words = benchmarks.word_split(splits["train"]) if task == "ner" else None
    examples = {"train": splits["train"][:config.max_train_examples],  # [:None]: all of them
                "dev": splits["dev"][:config.max_eval_examples], "test": splits["test"][:config.max_eval_examples]}
    if splits.get("golden"):  # BioASQ: the first N of each test batch
        examples["test"] = qa.first_per_batch(splits["test"], splits["golden"], config.max_eval_examples)
    features = {name: featurize(task, split, tokenizer, labels, config, training=name == "train")
                for name, split in examples.items()}
    if not features["train"]:  # QA: no question has its answer where answer_start says (reported above)
        raise InputError(f"{data_dir}: no training example left to learn from")
    state = load_checkpoint(checkpoint, FINETUNE_CHECKPOINT_KEYS) if checkpoint.is_file() else None
    if resume and state is None:
        print(f"{out}: no checkpoint.pt to resume from; starting from scratch")
    started = read_json_or_none(out / "config.json") or {}  # the stopped run's task, data and model
    where = {"task": started.get("task"),
             **{key: str(Path(started.get(key, "")).resolve()) for key in ("data", "init")}}
    now = {"task": task, "data": str(data_dir.resolve()), "init": str(Path(init).resolve())}
    if "init_sha1" in started and digest:  # the same path, other weights (an export or pretrain --resume since)
        where["init_sha1"], now["init_sha1"] = started["init_sha1"], digest
    if state is not None and (state["labels"] != labels or state["finetune"] != asdict(config) or where != now):
        changed = (changed_settings(where, now) or changed_settings(state["finetune"], asdict(config))
                   or f"labels {state['labels']} -> {labels}")
        raise InputError(f"{checkpoint}: written with other settings ({changed}); resume with the stopped run's "
                         "flags, or pass another --out")
    device = setup_runtime(device_name).device  # e.g. --device cuda without a GPU: an error before OUT is made
    out.mkdir(parents=True, exist_ok=True)  # ... before anything is written
    paths = {"data": str(data_dir.resolve()), "init": str(Path(init).resolve())}  # a resume may run from another folder
    (out / "config.json").write_text(json.dumps({"task": task, **paths, "init_sha1": digest, "finetune": asdict(config),
                                                 "labels": labels}, indent=1) + "\n")
    seed_everything(config.seed, device)
    model_config = set_dropout(encoder, model_config, config.dropout)
    model = build_model(task, encoder, model_config, labels)  # the head's init depends on the seed
    if isinstance(init_model, SpanQA) and task == "qa":  # SQuAD -> BioASQ: BioBERT's run_factoid restores the SQuAD
        model.qa_outputs.load_state_dict(init_model.qa_outputs.state_dict())  # model's output layer with the rest
    model = model.to(device)
    optimizer = AdamWeightDecay(finetune_parameter_groups(model, config.layerwise_decay, config.weight_decay),
                                betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_epsilon)
    train = features["train"]
    steps_per_epoch = math.ceil(len(train) / config.batch_size)  # the last, smaller batch is kept
    train_steps = config.epochs * steps_per_epoch
    warmup_steps = config.warmup_proportion * train_steps  # a float, as optimization.py: 42.9 steps of 429, not 42
    best, step, loss_sum, first_epoch = None, 0, 0.0, 1
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        best, step, loss_sum, first_epoch = state["best"], state["step"], state["loss_sum"], state["epoch"]
        print(f"resumed from {checkpoint} at step {step} of {train_steps}")
    optimizer.init_state()  # Adam's moments before step 1, as in pre-training: XLA compiles step 1 with the others
    sync(device)
    log = MetricsLog(out, step)
    stop = StopOnSignal()
    # the handlers cover the whole run: a signal during an epoch's evaluation or the test waits for it, then saves
    with stop:
        for epoch in range(first_epoch, config.epochs + 1):
            model.train()
            # a permutation per (seed, epoch) and dropout seeded per step: a resumed run repeats an uninterrupted one
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.seed * 1_000 + epoch))
            starts = range((step - (epoch - 1) * steps_per_epoch) * config.batch_size, len(train), config.batch_size)
            bar = tqdm(starts, desc=f"{task} epoch {epoch}/{config.epochs}", unit="batch", dynamic_ncols=True)
            # the epoch's loss, summed on the device and read only every LOSS_READ_EVERY steps (a read waits for the
            # device: on a TPU the host stops tracing the next step); a [1] vector, data to every step's program
            epoch_loss = torch.tensor([loss_sum], dtype=torch.float32).to(device)
            reads_before = xla_count(device, "TransferFromDeviceTime")
            for start in stop.until_requested(bar):
                batch = collate([train[i] for i in order[start:start + config.batch_size].tolist()],
                                pad_to(config, device, task))
                batch = {k: v.to(device) for k, v in batch.items()}
                lr = linear_schedule(step, config.learning_rate, train_steps, warmup_steps)
                if device.type != "xla":  # XLA's generator advances inside the compiled step instead
                    torch.manual_seed(step_seed(config.seed, step, 0))
                loss = train_step(model, optimizer, batch, device_scalar(lr, device), config.clip_norm)
                epoch_loss = epoch_loss + loss  # XLA: inside the step's graph, cut here
                sync(device)
                step += 1
                if (done := step - (epoch - 1) * steps_per_epoch) % LOSS_READ_EVERY == 0:
                    bar.set_postfix(loss=f"{epoch_loss.item() / done:.4f}", lr=f"{lr:.2e}")
            loss_sum = epoch_loss.item()
            reads_after = xla_count(device, "TransferFromDeviceTime")  # None off XLA
            if stop.requested:  # in the middle of the epoch: it goes on from this step
                bar.close()
                stop_with_checkpoint(stop, model, optimizer, step, epoch, best, loss_sum, labels, config, checkpoint)
            # QA without a dev file (BioASQ: the paper has none) keeps the last epoch
            dev = evaluate(task, model, examples["dev"], features["dev"], labels, config, device)[0] \
                if examples["dev"] else {}
            record = {"epoch": epoch, "step": step, "train_loss": round(loss_sum / steps_per_epoch, 6),
                      **{f"dev_{k}": round(v, 6) for k, v in dev.items() if isinstance(v, float)}}
            if device.type == "xla":  # a running total: every shape is compiled in epoch 1, nothing after
                record["xla_compiles"] = xla_count(device, "CompileTime")
                # this epoch's steps read the device once per LOSS_READ_EVERY steps and once at the end, not each step
                record["xla_host_reads"] = reads_after - reads_before
            log.write(record)
            loss_sum = 0.0
            dev_text = f", dev {score_text(dev)}" if dev else ""
            print(f"epoch {epoch}: train loss {record['train_loss']:.4f}{dev_text}")
            if best is None or not dev or dev["f1"] > best[1]["f1"]:
                best = (epoch, dev)
                save_finetuned(model, out / "best", labels, vocab, config, words)
            if stop.requested:  # during the evaluation: the epoch is whole, the next one starts from its beginning
                stop_with_checkpoint(stop, model, optimizer, step, epoch + 1, best, 0.0, labels, config, checkpoint)
        log.close()
        model = load_finetuned(out / "best")[0].to(device)
        test = evaluate(task, model, examples["test"], features["test"], labels, config, device,
                        splits.get("golden"))[0] if examples["test"] else {}
        result = {"task": task, **paths, "init_sha1": digest, "seed": config.seed,
                  "best_epoch": best[0], "labels": labels, "dev": best[1], "test": test, "finetune": asdict(config)}
        (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
        checkpoint.unlink(missing_ok=True)
    print(f"best epoch {best[0]}; test {score_text(test) if test else 'none'} -> {out / 'result.json'}")
    if best[1] and best[1]["f1"] == 0:  # e.g. the quick start's tiny model at Table 5's learning rate
        print(f"note: dev F1 was 0 in every epoch at learning rate {config.learning_rate:g} (no entity, relation or "
              "answer found)" + (": Table 5's learning rates are for base; a small model needs a higher one (tiny: "
                                 "finetune --learning-rate 1e-3 --epochs 10, README 'What we measured on this 2-core "
                                 "CPU')" if config.learning_rate < 1e-3 else ""), file=sys.stderr)
    if stop.requested:  # during the test: the run is whole (result.json), and the caller (reproduce) stops too
        print(f"stopped after the run finished: {out} is complete", file=sys.stderr)
        raise SystemExit(stop.exit_code)
    return result


# ------------------------------------------------------------------------------------------------ scores, in lines
SCORE_NAMES = {"precision": "P", "recall": "R", "em": "EM", "f1": "F1", "sacc": "SAcc", "lacc": "LAcc", "mrr": "MRR"}


def score_text(scores):
    """One line for the logs: "P/R/F1 85.10/88.02/86.54", "EM/F1 ..." or "SAcc/LAcc/MRR ..." (in %)."""
    keys = [key for key in SCORE_NAMES if key in scores]
    return "/".join(SCORE_NAMES[k] for k in keys) + " " + "/".join(f"{100 * scores[k]:.2f}" for k in keys)

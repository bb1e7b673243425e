"""An independent reference for the features baseline's dimensional trials: eGeMAPS + ridge, outside the project.

Reads an MSP-Podcast release tree directly (Labels/labels_consensus.csv, Audios/*.wav: no ingest, no
shards, no Tune, no MLflow), extracts openSMILE eGeMAPSv02 functionals, fits scikit-learn ridge
regressions on the Train speakers for each alpha, picks the alpha by Development CCC and prints the
CCC per dimension on Development and Test1 (held-out speakers). CCC is computed here from its formula.

    python scripts/egemaps_ridge.py /tmp/msp
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import opensmile
import soundfile
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

COLUMNS = {"arousal": "EmoAct", "valence": "EmoVal", "dominance": "EmoDom"}
ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0)


def concordance(t: np.ndarray, p: np.ndarray) -> float:
    return float(2 * np.cov(t, p, bias=True)[0, 1] / (t.var() + p.var() + (t.mean() - p.mean()) ** 2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path, help="the release tree (Labels/, Audios/)")
    args = parser.parse_args()
    smile = opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, opensmile.FeatureLevel.Functionals)
    with open(args.root / "Labels" / "labels_consensus.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    features, targets, splits = [], [], []
    for row in rows:
        audio, rate = soundfile.read(args.root / "Audios" / row["FileName"], dtype="float32")
        features.append(smile.process_signal(audio, rate).to_numpy()[0])
        targets.append([float(row[c]) for c in COLUMNS.values()])
        splits.append(row["Split_Set"].lower())
    x, y, splits = np.array(features), np.array(targets), np.array(splits)
    train, dev, test = (splits == s for s in ("train", "development", "test1"))

    def scores(model, mask) -> dict[str, float]:
        predicted = model.predict(x[mask])
        return {d: concordance(y[mask, i], predicted[:, i]) for i, d in enumerate(COLUMNS)}

    fitted = {a: make_pipeline(StandardScaler(), Ridge(alpha=a)).fit(x[train], y[train]) for a in ALPHAS}
    best = max(ALPHAS, key=lambda a: np.mean(list(scores(fitted[a], dev).values())))
    print(f"{len(rows)} clips: train {train.sum()}, development {dev.sum()}, test1 {test.sum()}; alpha by dev: {best}")
    for name, mask in (("development", dev), ("test1", test)):
        values = scores(fitted[best], mask)
        print(f"{name:12s} " + "  ".join(f"{d} CCC {v:.3f}" for d, v in values.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Compare each smoke trial's final MLflow metrics between two stores (matched by learning_rate and schedule).

python scripts/compare_smoke_metrics.py sqlite:////BEFORE/mlflow.db sqlite:////AFTER/mlflow.db
"""

import sys

from mlflow.tracking import MlflowClient


def trials(uri):
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("smoke")
    out = {}
    for r in c.search_runs([exp.experiment_id]):
        if "mlflow.parentRunId" not in r.data.tags:
            continue
        key = (r.data.params.get("learning_rate"), r.data.params.get("schedule"))
        out[key] = r.data.metrics
    return out


skip = ("seconds", "trial/", "curve/", "train/clips")
before, after = trials(sys.argv[1]), trials(sys.argv[2])
for key in sorted(before):
    b, a = before[key], after.get(key, {})
    common = sorted(k for k in b if k in a and not any(s in k for s in skip) and not k.startswith(("val/", "train/")))
    diff = [k for k in common if abs(b[k] - a[k]) > 0]
    print(
        key,
        f"{len(common)} common final metrics, {len(diff)} differ;",
        f"test_en/accuracy {b.get('test_en/accuracy'):.3f} -> {a.get('test_en/accuracy'):.3f},",
        f"test_zh/accuracy {b.get('test_zh/accuracy'):.3f} -> {a.get('test_zh/accuracy'):.3f}",
        diff[:5],
    )
    only_b = sorted(set(b) - set(a))
    only_a = sorted(set(a) - set(b))
    print("   only before:", only_b[:8], "... only after:", only_a[:8])

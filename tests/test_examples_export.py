"""``examples/export_network.py`` runs in its quick mode and prints what it promises: the
export's predictions equal the estimator's, the widths it grew, the static architecture
that refits to them, and ONNX's predictions when onnx, onnxscript and onnxruntime are
installed.
"""

import importlib.util
import json
import re
import runpy
from pathlib import Path

import numpy as np

from sklearn_north.export import static_architecture

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "export_network.py"


def printed(out, label):
    match = re.search(rf"^{re.escape(label)}: (.+)$", out, re.MULTILINE)
    assert match, out
    return match[1]


def test_export_network(capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["export_network.py", "--quick"])
    found = runpy.run_path(str(EXAMPLE), run_name="__main__")
    out = capsys.readouterr().out
    clf, static = found["clf"], found["static"]
    assert len(clf.growth_history_) > 0  # it grew
    assert printed(out, "grown widths") == str(clf.widths_)
    # The differences it prints are float rounding, and they are the real ones.
    proba = clf.predict_proba(found["X_test"])
    for label, exported in [
        ("max |softmax(export) - predict_proba|", found["exported"]),
        ("max |softmax(saved and loaded) - predict_proba|", found["reloaded"]),
    ]:
        difference = float(printed(out, label))
        assert difference == np.abs(exported - proba).max()
        assert difference < 1e-5
    # The architecture it prints is the grown one, and the static refit has its widths.
    architecture = json.loads(printed(out, "static architecture"))
    assert architecture == json.loads(json.dumps(static_architecture(clf)))
    assert tuple(architecture["widths"]) == clf.widths_
    assert printed(out, "static network's widths") == str(clf.widths_)
    assert static.widths_ == clf.widths_ and len(static.growth_history_) == 0
    onnx_label = "max |softmax(onnxruntime) - predict_proba|"
    if all(importlib.util.find_spec(p) for p in ("onnx", "onnxscript", "onnxruntime")):
        assert float(printed(out, onnx_label)) < 1e-5
    else:
        assert onnx_label not in out and "ONNX: skipped" in out

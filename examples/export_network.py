"""Export a grown CNN: a plain torch module, its widths as a static architecture, ONNX.

python examples/export_network.py [--quick]

Grows the small CNN on digits, then hands the grown network over to code that knows
nothing of sklearn-north (``sklearn_north.export``): a torch ``nn.Sequential`` of standard
layers whose softmax is ``predict_proba``, saved and loaded with torch alone; the grown
widths as a static architecture (JSON), refitted as a static network; and, when onnx,
onnxscript and onnxruntime are installed, an ONNX file run by onnxruntime.

``--quick``: 600 training digits and 3 epochs (what the test suite runs).
"""

import io
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from sklearn_north import GrowingCNNClassifier
from sklearn_north.export import static_architecture, to_onnx, to_torch

quick = "--quick" in sys.argv[1:]
X, y = load_digits(return_X_y=True)
X = (X / 16).astype(np.float32)  # the export takes float32, preprocessed as in fit
X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0, stratify=y)
if quick:
    X_train, y_train = X_train[:600], y_train[:600]

# Narrow initial widths (the standard ones are 32, 64, 128) that grow in seconds.
clf = GrowingCNNClassifier(
    widths=(4, 8, 16), lr=3e-3, max_epochs=3 if quick else 15, random_state=0
)
clf.fit(X_train, y_train)
proba = clf.predict_proba(X_test)
print("grown widths:", clf.widths_)
print("test accuracy:", round(clf.score(X_test, y_test), 4))

# A torch module of standard layers with copies of the weights, in eval mode. It takes
# images: the estimator's rows reshaped to input_shape_ (here 1 x 8 x 8).
module = to_torch(clf)
print(module)
images = torch.from_numpy(X_test.reshape(-1, *clf.input_shape_))
with torch.no_grad():
    exported = module(images).softmax(dim=1).numpy()
print("max |softmax(export) - predict_proba|:", np.abs(exported - proba).max())

# It needs torch only: torch.save pickles the whole module, torch.load(weights_only=False)
# reads it back (load only files you trust, as any pickle).
buffer = io.BytesIO()
torch.save(module, buffer)
buffer.seek(0)
loaded = torch.load(buffer, weights_only=False)
with torch.no_grad():
    reloaded = loaded(images).softmax(dim=1).numpy()
print("max |softmax(saved and loaded) - predict_proba|:", np.abs(reloaded - proba).max())

# The grown widths as a static architecture; its "params" make a static estimator of
# those widths (to retrain elsewhere, or here).
architecture = static_architecture(clf)
print("static architecture:", json.dumps(architecture))
static = clone(clf).set_params(**architecture["params"]).fit(X_train, y_train)
print("static network's widths:", static.widths_)
print("static network's test accuracy:", round(static.score(X_test, y_test), 4))

try:
    import onnxruntime
    from onnx import __version__ as onnx_version  # noqa: F401  (to_onnx needs onnx too)
    from onnxscript import __version__ as onnxscript_version  # noqa: F401
except ImportError:
    print("ONNX: skipped (pip install onnx onnxscript onnxruntime)")
else:
    with tempfile.TemporaryDirectory() as folder:
        path = to_onnx(clf, Path(folder) / "grown_cnn.onnx")
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (logits,) = session.run(["logits"], {"input": images.numpy()})
    onnx_proba = torch.from_numpy(logits).softmax(dim=1).numpy()
    print("max |softmax(onnxruntime) - predict_proba|:", np.abs(onnx_proba - proba).max())

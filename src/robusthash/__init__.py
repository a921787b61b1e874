"""robusthash: adversarial robustness of deep-hashing image retrieval.

Train hashing models, attack them (PgA and the baselines the papers compare), defend them (CgAT and its
baselines) and report retrieval quality under attack. The two papers that specify the methods are cited by
equation number in the docstrings: "PgA eq. (n)" and "CgAT eq. (n)".

The façade (imported on first use, so ``import robusthash`` stays light)::

    import robusthash as rh
    data = rh.load_dataset("fashion-mnist")
    model = rh.load_model("fashion-mnist-dph-32")         # a zoo name, a checkpoint, or file.py:factory
    run = rh.evaluate_attacks(model, data, rh.AttackSuite(attacks=["pga"], queries=100))
"""

from __future__ import annotations

import importlib
from typing import Any

from robusthash.errors import UserError

__version__ = "0.1.0"

# name -> module that defines it
_FACADE = {
    "create_model": "robusthash.models",
    "wrap_model": "robusthash.models",
    "load_dataset": "robusthash.data",
    "create_attack": "robusthash.attacks",
    "list_attacks": "robusthash.attacks",
    "TrainConfig": "robusthash.training",
    "train": "robusthash.training",
    "DefenseConfig": "robusthash.defenses",
    "defend": "robusthash.defenses",
    "AttackSuite": "robusthash.robustness",
    "evaluate_attacks": "robusthash.robustness",
    "evaluate_retrieval": "robusthash.evaluation",
    "read_checkpoint": "robusthash.checkpoint",
    "SmoothingConfig": "robusthash.certify",
    "CertifySettings": "robusthash.certify",
    "certify_model": "robusthash.certify",
    "ModelSource": "robusthash.loading",
    "load_with_data": "robusthash.loading",
    "load_results": "robusthash.results",
    "CardProtocol": "robusthash.cards",
    "measure_card": "robusthash.cards",
    "read_card": "robusthash.cards",
    "list_models": "robusthash.app.zoo",
}

__all__ = ["UserError", "__version__", "load_model", *_FACADE]


def __getattr__(name: str) -> Any:
    if name in _FACADE:
        return getattr(importlib.import_module(_FACADE[name]), name)
    raise AttributeError(f"module 'robusthash' has no attribute {name!r}")


def load_model(source: str, device: Any = "cpu", output: str = "tanh", image_shape: Any = None) -> Any:
    """A model ready to attack, from any source: a zoo name (:func:`list_models`), a robusthash
    checkpoint file, or ``path/to/file.py:factory`` (your module, wrapped by :func:`wrap_model` with ``output``
    and ``image_shape``). Unknown sources are a :class:`UserError` naming the three kinds."""
    from pathlib import Path

    from robusthash.app import zoo
    from robusthash.checkpoint import read_checkpoint
    from robusthash.models import load_model_def, wrap_model

    if source in {m.name for m in zoo.list_models()}:
        return zoo.load_model(source, device)
    if source.rpartition(":")[0].endswith(".py"):
        module = load_model_def(source)
        shape = (3, 224, 224) if image_shape is None else image_shape
        return wrap_model(module, output, image_shape=shape, name=source).to(device).eval()
    if Path(source).is_file():
        return read_checkpoint(source).build_model(device)
    raise UserError(
        f"no model {source!r}: give a zoo name ({', '.join(m.name for m in zoo.list_models())}), a "
        "checkpoint file, or path/to/file.py:factory"
    )

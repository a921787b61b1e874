"""Bring your own model: any ``nn.Module`` that maps images in [0, 1] to K continuous code values, and state
dicts in the layouts of the field's public code.

- :func:`wrap_model` turns a module into a :class:`WrappedModel` with the interface every attack, defence and
  metric uses (``preactivation``, ``forward`` = tanh, ``encode`` = sign, ``bits``, ``config``).
- :func:`load_model_def` builds a module from ``path/to/file.py:factory`` (the CLI's ``--model-def``).
- :func:`load_foreign_state_dict` loads a state dict written by DeepHash-pytorch (``AlexNet``: ``features`` +
  ``hash_layer`` = Dropout, fc6, ReLU, Dropout, fc7, ReLU, hash) or by the CgAT repository (``AlexNet`` / ``VGG``:
  ``features`` + ``classifier`` whose last Linear is the hash layer; ``AlexNetFc`` / ``VGGFc``: ``features`` +
  ``classifier.classifier0-5`` + ``hash_layer``), and the ResNets of both (``conv1`` ... ``layer4`` and/or
  ``feature_layers``, then ``hash_layer``) into robusthash's model of the same backbone; and the ProS-GAN
  repository's ``Generator`` (backbone ``"prosgan-generator"``) into the official-layout generator. Their
  models normalise with ImageNet's mean/std inside (CgAT) or outside (DeepHash-pytorch) the network: give the
  data's mean/std.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robusthash.codes import binarize
from robusthash.errors import UserError

OUTPUTS = ("tanh", "preactivation")


class WrappedModel(nn.Module):
    """A user's module as a hashing model. ``output="preactivation"``: the module returns the logits h;
    ``"tanh"``: it returns tanh(h) (or any code in (-1, 1)), and h is recovered as atanh of the output clamped to
    1 - 1e-6 (attacks then see gradients through atanh; fully saturated outputs give none, so prefer exposing
    the logits). ``mean``/``std`` normalise the [0, 1] input before the module (default: none).

    ``preprocess`` is a defence's input transformation (quantisation, filtering, JPEG), applied to the [0, 1]
    image before the normalisation; ``bpda=True`` differentiates it as the identity (the straight-through
    approximation of BPDA), so that a non-differentiable preprocessing is attacked rather than hidden behind."""

    def __init__(
        self,
        module: nn.Module,
        bits: int,
        output: str,
        in_channels: int,
        mean: Sequence[float] | None,
        std: Sequence[float] | None,
        name: str,
        preprocess: Callable[[Tensor], Tensor] | None = None,
        bpda: bool = False,
    ) -> None:
        super().__init__()
        self.module = module
        self.preprocess = preprocess
        self.bpda = bpda
        self.bits = bits
        self.output = output
        self.in_channels = in_channels
        mean = tuple(mean) if mean is not None else (0.0,) * in_channels
        std = tuple(std) if std is not None else (1.0,) * in_channels
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.config = {
            "backbone": f"external:{name}",
            "bits": bits,
            "in_channels": in_channels,
            "mean": list(mean),
            "std": list(std),
            "output": output,
            "external": True,
        }

    def preactivation(self, x: Tensor) -> Tensor:
        if self.preprocess is not None:
            processed = self.preprocess(x)
            # BPDA (Athalye et al., ICML 2018): the preprocessing forward, the identity backward
            x = x + (processed - x).detach() if self.bpda else processed
        out = self.module((x - self.mean) / self.std).float()  # fp32 logits also under bf16 autocast
        if out.ndim != 2 or out.shape[1] != self.bits:
            raise UserError(
                f"the wrapped module returned shape {tuple(out.shape)}, expected (N, {self.bits})"
            )
        return out if self.output == "preactivation" else torch.atanh(out.clamp(-1 + 1e-6, 1 - 1e-6))

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.preactivation(x))

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        return binarize(self.preactivation(x))


def wrap_model(
    module: nn.Module,
    output: str = "tanh",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    image_shape: Sequence[int] = (3, 224, 224),
    name: str | None = None,
    preprocess: Callable[[Tensor], Tensor] | None = None,
    bpda: bool = False,
) -> WrappedModel:
    """Wrap ``module`` (images in [0, 1] of ``image_shape`` -> (N, K) codes) for attacks, defences and metrics.

    The module is probed once on two blank images to learn K; an output that is not (N, K) is a
    :class:`UserError` naming the shape it returned.
    """
    if not isinstance(module, nn.Module):
        raise UserError(f"wrap_model needs a torch.nn.Module, got {type(module).__name__}")
    if output not in OUTPUTS:
        raise UserError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
    image_shape = tuple(int(v) for v in image_shape)
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise UserError(f"image_shape must be (channels, height, width), got {image_shape}")
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        device = next(iter(module.parameters()), torch.zeros(())).device
        with torch.no_grad():
            probe = module(torch.zeros(2, *image_shape, device=device))
    except Exception as exc:  # noqa: BLE001 - the user's module failed on a valid input
        raise UserError(
            f"the module failed on images of shape (2, {', '.join(map(str, image_shape))}): "
            f"{type(exc).__name__}: {exc}"
        ) from None
    finally:
        for m, mode in modes:
            m.training = mode
    if not isinstance(probe, Tensor) or probe.ndim != 2 or probe.shape[0] != 2:
        shape = tuple(probe.shape) if isinstance(probe, Tensor) else type(probe).__name__
        raise UserError(f"the module must return codes of shape (N, K); for 2 images it returned {shape}")
    if preprocess is not None and not callable(preprocess):
        raise UserError(
            f"preprocess must be a function of a batch of images, got {type(preprocess).__name__}"
        )
    if bpda and preprocess is None:
        raise UserError("bpda=True needs a preprocess function (it is the preprocessing's backward)")
    return WrappedModel(
        module,
        int(probe.shape[1]),
        output,
        image_shape[0],
        mean,
        std,
        name or type(module).__name__,
        preprocess,
        bpda,
    )


def _guarded(what: str, call: Callable[[], Any]) -> Any:
    """``call()``, with any exception or ``SystemExit`` from a user's code turned into one :class:`UserError`
    (a factory that exits must not end the run as if it had succeeded)."""
    try:
        return call()
    except SystemExit as exc:
        raise UserError(f"{what}: it called exit({exc.code!r})") from None
    except Exception as exc:  # noqa: BLE001 - the user's code failed
        first = next(iter(str(exc).splitlines()), "")
        raise UserError(f"{what}: {type(exc).__name__}: {first}") from None


def load_model_def(spec: str) -> nn.Module:
    """``path/to/file.py:factory`` -> ``factory()``: the module a user defines in their own file."""
    path_text, _, factory = spec.rpartition(":")
    path = Path(path_text)
    if not path_text or not factory or path.suffix != ".py":
        raise UserError(f"--model-def must be path/to/file.py:factory, got {spec!r}")
    if not path.is_file():
        raise UserError(f"model definition file {path} not found")
    loader = importlib.util.spec_from_file_location(f"robusthash_user_model_{path.stem}", path)
    assert loader is not None and loader.loader is not None
    user = importlib.util.module_from_spec(loader)
    _guarded(f"{path} failed to import", lambda: loader.loader.exec_module(user))
    if not callable(getattr(user, factory, None)):
        raise UserError(f"{path} has no callable {factory!r}")
    module = _guarded(f"{path}:{factory}() failed", getattr(user, factory))
    if not isinstance(module, nn.Module):
        raise UserError(f"{path}:{factory}() returned {type(module).__name__}, not a torch.nn.Module")
    return module


# (pattern in the foreign key, replacement in robusthash's HashModel), per backbone and layout. Read from the public
# code: DeepHash-pytorch network.py; the CgAT repository's model/backbone.py (AlexNet, VGG, ResNet, and the
# HashNet-style AlexNetFc / VGGFc / ResNetFc that ProS-GAN also uses). Their ResNets register conv1 ... layer4 both
# by name and inside ``feature_layers``, so either key set is enough.
def _fc_rules(fc6: str, fc7: str, hash_layer: str, ours6: int, ours7: int) -> list[tuple[str, str]]:
    """Rules for a torchvision ``features`` + fully connected trunk: where fc6, fc7 and the hash layer sit there
    (regexes) and where fc6 / fc7 sit in robusthash's ``backbone`` (AlexNet 4 / 7, VGG 3 / 6)."""
    return [
        (r"^features\.", "backbone.0."),
        (rf"^{fc6}\.", f"backbone.{ours6}."),
        (rf"^{fc7}\.", f"backbone.{ours7}."),
        (rf"^{hash_layer}\.", "hash_layer."),
    ]


_ALEXNET = {
    "deephash": _fc_rules(r"hash_layer\.1", r"hash_layer\.4", r"hash_layer\.6", 4, 7),
    "cgat": _fc_rules(r"classifier\.1", r"classifier\.4", r"classifier\.6", 4, 7),
    "hashnet-fc": _fc_rules(r"classifier\.classifier1", r"classifier\.classifier4", "hash_layer", 4, 7),
}
_VGG = {
    "cgat": _fc_rules(r"classifier\.0", r"classifier\.3", r"classifier\.6", 3, 6),
    "hashnet-fc": _fc_rules(r"classifier\.classifier0", r"classifier\.classifier3", "hash_layer", 3, 6),
}
_RESNET = {
    "resnet-named": [(r"^(conv1|bn1|layer[1-4])\.", r"backbone.\1."), (r"^hash_layer\.", "hash_layer.")],
    "resnet-feature-layers": [
        (r"^feature_layers\.0\.", "backbone.conv1."),
        (r"^feature_layers\.1\.", "backbone.bn1."),
        *[(rf"^feature_layers\.{i + 4}\.", f"backbone.layer{i + 1}.") for i in range(4)],
        (r"^hash_layer\.", "hash_layer."),
    ],
}
LAYOUTS: dict[str, dict[str, list[tuple[str, str]]]] = {
    "alexnet": _ALEXNET,
    "vgg11": _VGG,
    **{f"resnet{d}": _RESNET for d in (18, 34, 50, 101)},
    # the ProS-GAN repository's Generator: robusthash's official layout keeps its parameter names
    "prosgan-generator": {"prosgan-official": [(r"^", "")]},
}


def convert_state_dict(
    state: dict[str, Tensor], backbone: str, expected: Sequence[str]
) -> tuple[dict[str, Tensor], str]:
    """Rename a foreign state dict's keys to robusthash's; returns (state, layout name). The layout whose
    renaming covers every expected weight wins; none does -> :class:`UserError` naming the keys it lacks."""
    wanted = {k for k in expected if k not in ("mean", "std")}
    best: tuple[int, str, dict[str, Tensor]] | None = None
    for layout, rules in LAYOUTS.get(backbone, {}).items():
        renamed = {}
        for key, value in state.items():
            for pattern, repl in rules:
                if re.match(pattern, key):
                    renamed[re.sub(pattern, repl, key, count=1)] = value
                    break
        missing = len(wanted - set(renamed))
        if best is None or missing < best[0]:
            best = (missing, layout, renamed)
        if missing == 0:
            return renamed, layout
    if best is None:
        raise UserError(
            f"no known state-dict layout for backbone {backbone!r}; layouts exist for "
            f"{', '.join(sorted(LAYOUTS))}"
        )
    lacking = sorted(wanted - set(best[2]))[:3]
    raise UserError(
        f"the state dict fits no known layout of {backbone} (closest: {best[1]}, lacking {lacking})"
    )


def load_foreign_state_dict(model: nn.Module, state: dict[str, Any], backbone: str) -> str:
    """Load ``state`` (robusthash's own keys, or a known foreign layout) into ``model``; returns the layout."""
    own = model.state_dict()
    if set(own) - {"mean", "std"} <= set(state):
        layout, converted = "robusthash", state
    else:
        converted, layout = convert_state_dict(state, backbone, list(own))
    converted = {**{k: own[k] for k in ("mean", "std") if k in own}, **converted}
    try:
        model.load_state_dict({k: v for k, v in converted.items() if k in own}, strict=True)
    except RuntimeError as exc:
        raise UserError(f"the state dict does not fit {backbone}: {str(exc).splitlines()[0]}") from None
    return layout

"""The one registry helper, and every registry of the package: each component knows its name and says what it is."""

from __future__ import annotations

import pytest

from robusthash.attacks import ATTACKS, PROTOCOLS, THREAT_MODELS
from robusthash.data import DATASETS, load_dataset
from robusthash.defenses import DEFENSES
from robusthash.errors import UserError
from robusthash.losses import LOSSES
from robusthash.models import BACKBONES
from robusthash.registry import Registry


def test_registry_registers_where_defined_and_names_the_valid_choices():
    things: Registry[type] = Registry("thing")

    @things.register
    class Alpha:
        name = "alpha"

    things.register(int, name="beta")
    assert things.get("alpha") is Alpha and things.names() == ["alpha", "beta"] and "beta" in things
    with pytest.raises(UserError, match="unknown thing 'gamma'; valid: alpha, beta"):
        things.get("gamma")
    with pytest.raises(ValueError, match="name"):
        things.register(object)
    things.register(Alpha)  # the same component again: nothing changes
    with pytest.raises(ValueError, match="thing name 'alpha' is already registered by .*Alpha"):
        things.register(str, name="alpha")
    assert things.get("alpha") is Alpha


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_knows_itself(name):
    cls = ATTACKS.get(name)
    assert cls.name == name and cls.display_name and cls.threat_model in THREAT_MODELS
    for protocol in PROTOCOLS:
        assert isinstance(cls.protocol_options(protocol), dict)
    with pytest.raises(UserError, match="unknown protocol"):
        cls.protocol_options("pgd7")


@pytest.mark.parametrize("name", DEFENSES.names())
def test_every_defence_knows_itself(name):
    cls = DEFENSES.get(name)
    assert cls.name == name and cls.display_name and cls.default_optimizer[0] in ("sgd", "adam")


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_knows_itself(name):
    assert LOSSES.get(name).name == name and LOSSES.get(name).display_name


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_backbone_knows_itself(name):
    spec = BACKBONES.get(name)
    assert spec.name == name and spec.description and callable(spec.build)


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_knows_itself_and_a_missing_folder_is_a_user_error(name, tmp_path):
    spec = DATASETS.get(name)
    assert spec.name == name and spec.description and spec.location()
    with pytest.raises(UserError):
        load_dataset(name, data_dir=tmp_path / "missing")

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from models import MLP, MODELS, SmallCNN, build, model_class


def _layers(model: nn.Module) -> list[nn.Module]:
    """The leaf modules in forward order."""
    return [m for m in model.modules() if not list(m.children())]


def test_mlp_default_architecture() -> None:
    model = build("mlp", dropout=0.3)
    assert isinstance(model, MLP)  # the factory builds the registered class
    linears = [m for m in _layers(model) if isinstance(m, nn.Linear)]
    # 784-128-10: the seed network.
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 128), (128, 10)]
    kinds = [type(m) for m in _layers(model)]
    assert kinds == [nn.Flatten, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]  # ReLU hidden layer
    dropout = _layers(model)[-2]
    assert isinstance(dropout, nn.Dropout)  # dropout sits right before the output layer
    assert dropout.p == 0.3  # with the requested rate


@pytest.mark.parametrize("hidden", [16, 256])
def test_mlp_hidden_configurable(hidden: int) -> None:
    linears = [m for m in _layers(build("mlp", hidden=hidden)) if isinstance(m, nn.Linear)]
    # The hidden width is a constructor argument.
    assert [(m.in_features, m.out_features) for m in linears] == [(784, hidden), (hidden, 10)]


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("batch", [1, 5])
def test_output_shape(name: str, batch: int) -> None:
    model = build(name, dropout=0.2)
    logits = model(torch.randn(batch, 1, 28, 28))
    assert logits.shape == (batch, 10)  # [B, 10] logits for every model
    assert logits.dtype == torch.float32  # float logits for cross-entropy


def test_cnn_configurable() -> None:
    model = build("cnn", channels=8, hidden=32, dropout=0.1)
    assert isinstance(model, SmallCNN)  # the factory builds the registered class
    convs = [m for m in _layers(model) if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 8), (8, 16)]  # widths
    layers = _layers(model)
    assert isinstance(layers[-2], nn.Dropout) and layers[-2].p == 0.1  # dropout before output
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)  # still [B, 10]


def test_batchnorm_follows_the_hidden_layers_and_replaces_their_bias() -> None:
    mlp = [type(m) for m in _layers(build("mlp", norm="batch"))]
    assert mlp == [nn.Flatten, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout, nn.Linear]
    hidden = [m for m in _layers(build("mlp", norm="batch")) if isinstance(m, nn.Linear)][0]
    assert hidden.bias is None  # BatchNorm's shift is the bias
    cnn = build("cnn", norm="batch", channels=8)
    norms = [m.num_features for m in _layers(cnn) if isinstance(m, nn.BatchNorm2d)]
    assert norms == [8, 16]  # after each convolution
    assert all(c.bias is None for c in _layers(cnn) if isinstance(c, nn.Conv2d))


def test_without_batchnorm_the_state_dict_keys_stay_as_they_were() -> None:
    # Checkpoints and registered models of earlier studies load into today's classes.
    assert list(build("mlp").state_dict()) == ["net.1.weight", "net.1.bias", "net.4.weight",
                                                "net.4.bias"]
    assert [k for k in build("cnn").state_dict() if k.startswith("features")] == [
        "features.0.weight", "features.0.bias", "features.3.weight", "features.3.bias"]


def test_an_unknown_norm_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown norm 'layer'; choose one of \['none', "):
        build("mlp", norm="layer")


def test_dropout_defaults_to_zero() -> None:
    dropouts = [m for m in _layers(build("mlp")) if isinstance(m, nn.Dropout)]
    assert [d.p for d in dropouts] == [0.0]  # no regularisation unless asked for


def test_unknown_model_name() -> None:
    # An unknown name is a ValueError listing the choices.
    with pytest.raises(ValueError, match=r"unknown model 'resnet'.*\['cnn', 'mlp'\]"):
        build("resnet")


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("dropout", [-0.1, 1.0, 1.5])
def test_dropout_out_of_range(name: str, dropout: float) -> None:
    # Dropout outside [0, 1) is refused, showing the value.
    with pytest.raises(ValueError, match=f"dropout={dropout}"):
        build(name, dropout=dropout)


def test_models_never_import_optuna() -> None:
    code = "import sys, models; models.build('cnn'); assert 'optuna' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    # Models know nothing of the search: importing them does not pull in optuna.
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_name_builds_its_class(name: str) -> None:
    cls = model_class(name)
    assert issubclass(cls, nn.Module)  # the registry line points at a real nn.Module
    assert type(build(name)) is cls  # and the factory builds exactly that class


def test_the_registry_is_read_without_torch() -> None:
    code = ("import sys, models\nfrom models.registry import MODELS\n"
            "print(sorted(MODELS), 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    # The names are there for the config and --help; torch waits for the first model built.
    assert result.stdout.strip() == "['cnn', 'mlp'] False"


def test_an_unknown_class_name_is_an_attribute_error() -> None:
    import models

    with pytest.raises(AttributeError, match="ResNet"):  # not a silent None
        models.ResNet  # a name no registry line gives

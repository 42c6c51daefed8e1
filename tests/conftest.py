"""Shared fixtures. Heavy objects (the embedded pretrained model) are built once per session."""

from __future__ import annotations

import os

# Keras runs on the torch backend in convlens; the backend must be chosen before anything imports keras
os.environ["KERAS_BACKEND"] = "torch"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, Phase, settings  # noqa: E402

# a failing graph op handler is a convlens bug: make it raise in every test instead of recording "unknown"
os.environ.setdefault("CONVLENS_STRICT_TRACE", "1")

# CI has 2 cores: keep torch from oversubscribing them when tests run alongside each other.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

settings.register_profile(
    "ci", deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], print_blob=True
)
# make mutation (tools/mutation.py) only needs to know THAT a test fails: skip shrinking the failing example (most of
# a hypothesis test's time on a killed mutant) and the example database; what is generated, and so what is caught, is
# the same as in "ci"
settings.register_profile(
    "mutation", parent=settings.get_profile("ci"), phases=(Phase.explicit, Phase.generate), database=None
)
settings.load_profile(os.environ.get("CONVLENS_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def chelsea() -> np.ndarray:
    """skimage's cat photo, (300, 451, 3) uint8."""
    import skimage.data

    return skimage.data.chelsea()


@pytest.fixture(scope="session")
def coffee() -> np.ndarray:
    import skimage.data

    return skimage.data.coffee()


@pytest.fixture(scope="session")
def lite0():
    """The embedded pretrained EfficientNet-Lite0 bundle (shared: tests must not modify it)."""
    from convlens.models import load_model

    return load_model("efficientnet_lite0")


@pytest.fixture(scope="session")
def resnet18_bundle():
    """torchvision ResNet-18, random init with a fixed seed (shared: tests must not modify it)."""
    from convlens.models import load_model

    torch.manual_seed(0)
    return load_model("resnet18")

import pytest
import torch
from torch import nn

from convlens.hooks import capture, hook_count, preserve_state


def _net():
    return nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(2 * 3 * 3, 2)
    )


def test_capture_removes_hooks_even_on_error():
    net = _net()
    with pytest.raises(RuntimeError), capture(net, ["0", "2"]) as cap:
        cap.run(torch.zeros(1, 3, 5, 5))  # wrong channel count
    assert hook_count(net) == 0


def test_stop_after_truncates_forward():
    net = _net()
    calls = []
    net[4].register_forward_hook(lambda *a: calls.append(1))
    with capture(net, ["1"], stop_after="1") as cap:
        assert cap.run(torch.zeros(1, 1, 5, 5)) is None
    assert "1" in cap.activations and calls == []


def test_clone_protects_from_inplace_and_keeps_graph():
    torch.manual_seed(0)
    net = _net().eval()
    x = torch.randn(2, 1, 5, 5)
    with capture(net, ["1"], detach=False, clone=True) as cap:
        y = cap.run(x)
    a = cap.activations["1"]
    assert (a < 0).any(), "in-place ReLU must not overwrite the recorded activation"
    (g,) = torch.autograd.grad(y.sum(), a)
    assert g.shape == a.shape


def test_preserve_state_restores_on_exception():
    net = _net().train()
    net[0].weight.requires_grad_(False)
    with pytest.raises(ValueError), preserve_state(net, train=False, requires_grad=True):
        assert not net.training and net[0].weight.requires_grad
        raise ValueError
    assert net.training and net[1].training
    assert not net[0].weight.requires_grad and net[4].weight.requires_grad


def test_module_called_twice_records_all_calls():
    relu = nn.ReLU()

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.relu = relu

        def forward(self, x):
            return self.relu(self.relu(x) - 1)

    m = Twice()
    with capture(m, ["relu"]) as cap:
        cap.run(torch.tensor([3.0]))
    assert [t.item() for t in cap.calls["relu"]] == [3.0, 2.0]
    assert cap.activations["relu"].item() == 2.0

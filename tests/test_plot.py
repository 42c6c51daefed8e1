import numpy as np
import pytest

from convlens.errors import InputError
from convlens.plot import apply_colormap, bar_plot, figure_to_array, image_grid, line_plot, normalize01, overlay


def test_normalize_constant_is_zero_not_nan():
    out = normalize01(np.full((3, 3), 7.0))
    assert np.isfinite(out).all() and (out == 0).all()
    per = normalize01(np.stack([np.arange(4.0), np.full(4, 2.0)]), per_channel_axis=0)
    assert per[0].tolist() == [0, 1 / 3, 2 / 3, 1] and (per[1] == 0).all()


def test_overlay_rgb_order_and_blend():
    img = np.zeros((2, 2, 3), np.uint8)
    img[..., 0] = 200  # pure red image
    out = overlay(img, np.zeros((2, 2)), alpha=0.0)
    assert (out == img).all()
    hot = overlay(img, np.ones((2, 2)), alpha=1.0, cmap="jet")
    assert (hot == apply_colormap(np.ones((2, 2)), "jet")).all()
    with pytest.raises(InputError):
        overlay(img[..., 0], np.ones((2, 2)))


def test_figures_render():
    fig = image_grid([np.random.rand(5, 5), np.zeros((5, 5, 3), np.uint8)], titles=["a", "b"], suptitle="t")
    assert figure_to_array(fig).ndim == 3
    assert line_plot({"x": ([0, 1], [1, 2])}, logy=True).axes[0].get_yscale() == "log"
    assert len(bar_plot({"a": 1}).axes) == 1
    with pytest.raises(InputError):
        image_grid([])

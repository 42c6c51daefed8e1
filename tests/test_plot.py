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


@pytest.mark.parametrize("n", [1, 3, 16, 17, 64])
def test_image_grid_titles_never_overlap_images_or_each_other(n):
    """Rendered boxes: every title lies above its own tile, inside the figure, clear of every other tile/title."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from convlens.plot import image_grid

    titles = [f"ch {i}  (objective value {i * 1.2345:.4f}, a long label)" for i in range(n)]
    fig = image_grid([np.random.rand(8, 12)] * n, titles=titles, suptitle="a very long suptitle " * 6)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    r = canvas.get_renderer()
    W, H = canvas.get_width_height()
    boxes = [(ax.get_window_extent(r), ax.title.get_window_extent(r)) for ax in fig.axes]
    for i, (_, t_i) in enumerate(boxes):
        assert t_i.x0 >= 0 and t_i.x1 <= W and t_i.y0 >= 0 and t_i.y1 <= H
        for j, (ax_j, t_j) in enumerate(boxes):
            if i != j:
                assert not t_i.overlaps(t_j) and not t_i.overlaps(ax_j), (i, j)
    sup = fig._suptitle.get_window_extent(r)
    assert all(not sup.overlaps(t) and not sup.overlaps(a) for a, t in boxes) and sup.x0 >= 0 and sup.x1 <= W

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


def test_guided_gradcam_is_drawn_as_rgb_like_pytorch_grad_cam():
    import numpy as np
    from pytorch_grad_cam.utils.image import deprocess_image

    from convlens.plot.explain import guided_to_rgb

    g = np.random.default_rng(0).normal(size=(3, 9, 7))
    np.testing.assert_array_equal(guided_to_rgb(g), deprocess_image(g.transpose(1, 2, 0)))


def test_methods_grid_wraps_at_four_labels_and_shows_guided_as_rgb():
    import numpy as np

    from convlens.plot.explain import guided_to_rgb, methods_grid

    img = np.zeros((16, 16, 3), np.uint8)
    maps = {f"m{i}": np.random.rand(16, 16) for i in range(8)}
    g = np.random.default_rng(1).normal(size=(3, 16, 16))
    fig = methods_grid(img, maps, title="x.png", label="Egyptian cat", score=0.794, layer="bn2", guided={"m3": g})
    tiles = [ax for ax in fig.axes if ax.get_title()]
    assert len(tiles) == 9
    rows = sorted({round(ax.get_position().y0, 3) for ax in tiles})
    assert len(rows) == 3 and max(sum(round(a.get_position().y0, 3) == r for a in tiles) for r in rows) == 4
    assert "Egyptian cat (79.4%)" in fig._suptitle.get_text() and "bn2" in fig._suptitle.get_text()
    guided_ax = next(ax for ax in tiles if ax.get_title() == "m3 (RGB)")
    np.testing.assert_array_equal(guided_ax.images[0].get_array(), guided_to_rgb(g))
    assert len(fig.axes) == 10  # + one shared colorbar


def test_cam_figure_names_class_score_method_layer_and_has_a_colorbar():
    import numpy as np

    from convlens.plot.explain import cam_figure

    fig = cam_figure(
        np.zeros((8, 8, 3), np.uint8), np.eye(8), label="espresso", score=0.8558, method="gradcam++", layer="bn2"
    )
    title = fig.axes[0].get_title()
    assert all(t in title for t in ("espresso", "85.6%", "gradcam++", "bn2"))
    assert len(fig.axes) == 2 and "map" in fig.axes[1].get_ylabel()

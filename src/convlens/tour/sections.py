"""The tour's sections, in course order (q1..q21). Each computes its topic live through the public
convlens API (no canned numbers) and returns a :class:`~convlens.tour.core.Body`; the ``@section``
decorator registers it with its title and one-line question.

Example:
    >>> from convlens.tour.core import SECTIONS
    >>> [SECTIONS[k].id for k in sorted(SECTIONS)][:3]
    ['q1', 'q2', 'q3']
"""

from __future__ import annotations

from convlens.tour.core import Body, Table, TourContext, TourFigure, section

__all__: list[str] = []


def _awaits(module: str, issue: int) -> None:
    """Import ``module``; a ModuleNotFoundError names the issue that delivers it."""
    import importlib

    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(f"this section needs {module} (issue {issue}), which is not available yet", name=module) from e


@section(1, 'Multi-channel convolution', 'How does one 3x3 filter combine the three channels of an RGB image into one output value?', needs=('convlens.arith',))
def q1(ctx: TourContext) -> Body:
    _awaits('convlens.arith', 3)
    raise NotImplementedError("section q1 is not wired yet")


@section(2, 'Zero padding', 'How does zero padding keep a 4x4 input at 4x4 after a 3x3 convolution?', needs=('convlens.arith',))
def q2(ctx: TourContext) -> Body:
    _awaits('convlens.arith', 3)
    raise NotImplementedError("section q2 is not wired yet")


@section(3, 'Dilation', 'What does a 3x3 kernel at dilation 2 see, and what does a 6x6 input give?', needs=('convlens.arith',))
def q3(ctx: TourContext) -> Body:
    _awaits('convlens.arith', 3)
    raise NotImplementedError("section q3 is not wired yet")


@section(4, 'Template matching', 'Why is convolution template matching: where does a filter respond most?', needs=('convlens.match',))
def q4(ctx: TourContext) -> Body:
    _awaits('convlens.match', 8)
    raise NotImplementedError("section q4 is not wired yet")


@section(5, 'Pyramid multi-scale search', 'How does an image pyramid let a fixed-size window find an object at another scale?', needs=('convlens.pyramid',))
def q5(ctx: TourContext) -> Body:
    _awaits('convlens.pyramid', 8)
    raise NotImplementedError("section q5 is not wired yet")


@section(6, 'Depth vs resolution', 'Why do channels grow while the spatial resolution shrinks in a real network?', needs=('convlens.inspect.depth',))
def q6(ctx: TourContext) -> Body:
    _awaits('convlens.inspect.depth', 4)
    raise NotImplementedError("section q6 is not wired yet")


@section(7, 'Output shape', 'What is the output shape of 128x128x32 convolved with sixteen 3x3x32 filters?', needs=('convlens.arith',))
def q7(ctx: TourContext) -> Body:
    _awaits('convlens.arith', 3)
    raise NotImplementedError("section q7 is not wired yet")


@section(8, 'Stride 2: 63 or 64?', 'With stride 2, is the output 63x63x16 or 64x64x16?', needs=('convlens.arith',))
def q8(ctx: TourContext) -> Body:
    _awaits('convlens.arith', 3)
    raise NotImplementedError("section q8 is not wired yet")


@section(9, '1x1 convolution', 'How does a 1x1 convolution reduce 28x28x64 to 28x28x32, and what does it cost?', needs=('convlens.blocks',))
def q9(ctx: TourContext) -> Body:
    _awaits('convlens.blocks', 8)
    raise NotImplementedError("section q9 is not wired yet")


@section(10, 'Early vs deep layers', 'What do early layers detect compared with deep ones?', needs=('convlens.inspect.depth',))
def q10(ctx: TourContext) -> Body:
    _awaits('convlens.inspect.depth', 4)
    raise NotImplementedError("section q10 is not wired yet")


@section(11, 'Max pooling, worked example', 'What does 2x2 max pooling with stride 2 compute?', needs=('convlens.arith',))
def q11(ctx: TourContext) -> Body:
    _awaits('convlens.arith', 3)
    raise NotImplementedError("section q11 is not wired yet")


@section(12, 'Pooling experiment', 'What does pooling buy: smaller maps, fewer coefficients, tolerance to shifts?', needs=('convlens.experiments',))
def q12(ctx: TourContext) -> Body:
    _awaits('convlens.experiments', 8)
    raise NotImplementedError("section q12 is not wired yet")


@section(13, 'Data augmentation preview', 'What does augmentation make of one image?', needs=('convlens.data',))
def q13(ctx: TourContext) -> Body:
    _awaits('convlens.data', 7)
    raise NotImplementedError("section q13 is not wired yet")


@section(14, 'Transfer learning', 'On a small dataset, do pretrained features beat training from scratch?', needs=('convlens.train',))
def q14(ctx: TourContext) -> Body:
    _awaits('convlens.train', 7)
    raise NotImplementedError("section q14 is not wired yet")


@section(15, 'Freezing', 'Why freeze the pretrained base while a new head trains, and does it stay unchanged?', needs=('convlens.train',))
def q15(ctx: TourContext) -> Body:
    _awaits('convlens.train', 7)
    raise NotImplementedError("section q15 is not wired yet")


@section(16, 'Fine-tuning', 'Does the five-step fine-tuning recipe improve on frozen features?', needs=('convlens.train',))
def q16(ctx: TourContext) -> Body:
    _awaits('convlens.train', 7)
    raise NotImplementedError("section q16 is not wired yet")


@section(17, 'Inception block costs', 'What does an inception block cost, and how much do 1x1 reductions save?', needs=('convlens.blocks',))
def q17(ctx: TourContext) -> Body:
    _awaits('convlens.blocks', 8)
    raise NotImplementedError("section q17 is not wired yet")


@section(18, 'Vanishing gradients', 'Do gradients vanish in deep plain nets, and do residual shortcuts keep them?', needs=('convlens.experiments',))
def q18(ctx: TourContext) -> Body:
    _awaits('convlens.experiments', 8)
    raise NotImplementedError("section q18 is not wired yet")


@section(19, 'Intermediate activations', "What do a real network's intermediate activations look like for one image?", needs=('convlens.inspect',))
def q19(ctx: TourContext) -> Body:
    _awaits('convlens.inspect', 4)
    raise NotImplementedError("section q19 is not wired yet")


@section(20, 'Filter visualization', 'What input pattern does a filter respond to most?', needs=('convlens.featvis',))
def q20(ctx: TourContext) -> Body:
    _awaits('convlens.featvis', 6)
    raise NotImplementedError("section q20 is not wired yet")


@section(21, 'Grad-CAM and its family', 'Where did the network look to decide, and how faithful is that map?', needs=('convlens.explain',))
def q21(ctx: TourContext) -> Body:
    _awaits('convlens.explain', 5)
    raise NotImplementedError("section q21 is not wired yet")

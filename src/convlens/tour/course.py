"""The course, in order: one explicit list of the tour's sections (number, title, question, function).

Nothing registers itself on import; this list IS the tour. Each function lives in its topic module
(:mod:`~convlens.tour.arithmetic`, :mod:`~convlens.tour.vision`, :mod:`~convlens.tour.training`,
:mod:`~convlens.tour.explain`).

Example:
    >>> [s.id for s in COURSE][:3], COURSE[0].fn.__name__
    (['q1', 'q2', 'q3'], 'multichannel_convolution')
"""

from __future__ import annotations

from convlens.tour import arithmetic, explain, training, vision
from convlens.tour.core import SectionSpec

__all__ = ["COURSE"]

#: the tour's sections in course order (ids q1..q21 are HTML element ids of the report: a contract)
COURSE: tuple[SectionSpec, ...] = (
    SectionSpec(
        1,
        "Multi-channel convolution",
        "How does one 3x3 filter combine the three channels of an RGB image into one output value?",
        arithmetic.multichannel_convolution,
    ),
    SectionSpec(
        2,
        "Zero padding",
        "How does zero padding keep a 4x4 input at 4x4 after a 3x3 convolution?",
        arithmetic.zero_padding,
    ),
    SectionSpec(
        3, "Dilation", "What does a 3x3 kernel at dilation 2 see, and what does a 6x6 input give?", arithmetic.dilation
    ),
    SectionSpec(
        4,
        "Template matching",
        "Why is convolution template matching: where does a filter respond most?",
        vision.template_matching,
    ),
    SectionSpec(
        5,
        "Pyramid multi-scale search",
        "How does an image pyramid let a fixed-size window find an object at another scale?",
        vision.pyramid_multiscale_search,
    ),
    SectionSpec(
        6,
        "Depth vs resolution",
        "Why do channels grow while the spatial resolution shrinks in a real network?",
        vision.depth_vs_resolution,
    ),
    SectionSpec(
        7,
        "Output shape",
        "What is the output shape of 128x128x32 convolved with sixteen 3x3x32 filters?",
        arithmetic.output_shape,
    ),
    SectionSpec(
        8, "Stride 2: 63 or 64?", "With stride 2, is the output 63x63x16 or 64x64x16?", arithmetic.stride_two_rounding
    ),
    SectionSpec(
        9,
        "1x1 convolution",
        "How does a 1x1 convolution reduce 28x28x64 to 28x28x32, and what does it cost?",
        arithmetic.one_by_one_convolution,
    ),
    SectionSpec(
        10, "Early vs deep layers", "What do early layers detect compared with deep ones?", vision.early_vs_deep_layers
    ),
    SectionSpec(
        11,
        "Max pooling, worked example",
        "What does 2x2 max pooling with stride 2 compute?",
        arithmetic.max_pooling_worked_example,
    ),
    SectionSpec(
        12,
        "Pooling experiment",
        "What does pooling buy: smaller maps, fewer coefficients, tolerance to shifts?",
        vision.pooling_experiment,
    ),
    SectionSpec(
        13, "Data augmentation preview", "What does augmentation make of one image?", training.augmentation_preview
    ),
    SectionSpec(
        14,
        "Transfer learning",
        "On a small dataset, do pretrained features beat training from scratch?",
        training.transfer_learning,
    ),
    SectionSpec(
        15,
        "Freezing",
        "Why freeze the pretrained base while a new head trains, and does it stay unchanged?",
        training.freezing,
    ),
    SectionSpec(
        16, "Fine-tuning", "Does the five-step fine-tuning recipe improve on frozen features?", training.fine_tuning
    ),
    SectionSpec(
        17,
        "Inception block costs",
        "What does an inception block cost, and how much do 1x1 reductions save?",
        arithmetic.inception_block_costs,
    ),
    SectionSpec(
        18,
        "Vanishing gradients",
        "Do gradients vanish in deep plain nets, and do residual shortcuts keep them?",
        training.vanishing_gradients,
    ),
    SectionSpec(
        19,
        "Intermediate activations",
        "What do a real network's intermediate activations look like for one image?",
        vision.intermediate_activations,
    ),
    SectionSpec(
        20, "Filter visualization", "What input pattern does a filter respond to most?", explain.filter_visualization
    ),
    SectionSpec(
        21,
        "Grad-CAM and its family",
        "Where did the network look to decide, and how faithful is that map?",
        explain.gradcam_family,
    ),
)

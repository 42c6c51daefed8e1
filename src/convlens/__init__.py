"""convlens: every core idea of convolutional networks, computable and inspectable on real models.

Example:
    >>> import convlens
    >>> convlens.__version__
    '0.1.0'
"""

from convlens.errors import ConvlensError, DataError, InputError, LayerError, ModelError

__version__ = "0.1.0"
__all__ = ["ConvlensError", "InputError", "ModelError", "LayerError", "DataError", "__version__"]

"""gptfast: train small GPT language models on your own text and sample from them, fast."""
from gptfast._backend import extension_available
from gptfast.errors import InputError

__version__ = "0.1.0"
__all__ = ["InputError", "extension_available", "__version__"]

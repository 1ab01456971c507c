"""vlreward: Skywork-VL-Reward scores in Python.

    import vlreward
    model = vlreward.Model("Skywork-VL-Reward-7B")
    model.score({"image": "chart.jpg", "question": "Is purple the highest?", "answer": "No."})

`Model` runs the C library in this process (the GIL is released while it computes; one Model may be
shared by threads); `Client` sends the same requests to a `vlreward serve`. See docs/python.md.
"""
from ._errors import (Error, FileError, FormatError, InputError, InterruptedError_ as Interrupted, LimitError,
                      ModelError, NetworkError, NumericError)
from ._model import Model
from ._client import Client

try:
    from ._vlreward import version as _library_version

    __version__ = _library_version()
except ImportError:  # the extension is not built: Client still works
    __version__ = "0.1.0"

__all__ = ["Model", "Client", "Error", "FileError", "FormatError", "InputError", "Interrupted", "LimitError",
           "ModelError", "NetworkError", "NumericError", "__version__"]

"""vlreward.Error and its subclasses, one per kind of library status; each carries the library's
message and its status name."""


class Error(Exception):
    """A request or a model that vlreward could not handle. `status` is the library's short status
    name ("input error", ...), `message` its message."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.message = message
        self.status = status


class FileError(Error):
    """A file could not be opened or read (VLR_ERR_IO)."""


class FormatError(Error):
    """A file or request is malformed: JSON, safetensors, image bytes (VLR_ERR_FORMAT)."""


class ModelError(Error):
    """A model's config or tensors are wrong (VLR_ERR_CONFIG, VLR_ERR_SHAPE)."""


class InputError(Error):
    """A request that cannot be scored: no assistant turn, a bad image value... (VLR_ERR_INPUT,
    VLR_ERR_UNSUPPORTED)."""


class LimitError(Error):
    """A size cap was hit: tokens, pixels, bytes (VLR_ERR_LIMIT)."""


class NetworkError(Error):
    """An http(s) image, or the server of a Client, could not be reached (VLR_ERR_NETWORK)."""


class InterruptedError_(Error):
    """The call was cancelled (VLR_ERR_INTERRUPTED)."""


class NumericError(Error):
    """The model computed a score that is not a finite number (VLR_ERR_NUMERIC)."""


# the library's vlr_status values, in the order of include/vlreward.h
_BY_STATUS = {1: FileError, 2: FormatError, 3: ModelError, 4: ModelError, 5: InputError, 6: LimitError,
              8: InputError, 9: NetworkError, 10: InterruptedError_, 12: NumericError}


def from_status(status, message, status_name=None):
    return _BY_STATUS.get(status, Error)(message, status_name)

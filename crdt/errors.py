"""Errors of the document model. pycrdt's own errors are translated here, once."""


class CrdtError(Exception):
    """Base class of the document model's errors."""


class InvalidUpdate(CrdtError):
    """An update or state vector from a remote that pycrdt cannot decode or integrate.

    This is the remote's fault: the document is left as it was before the call.
    """

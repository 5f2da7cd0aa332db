"""Storage errors in families that say whose fault it is and whether to retry."""


class StorageError(Exception):
    """Base class of every error a storage port raises."""


class StorageUnavailable(StorageError):
    """Transient: the backend cannot be reached or timed out. Retrying may succeed."""


class StorageConflict(StorageError):
    """The write conflicts with what is stored (duplicate key, stale version)."""


class DocumentFrozen(StorageConflict):
    """The document's content is frozen (in review): the change journal refused an append.

    Not transient: appends are refused until the document is thawed. Nothing was written.
    """


class StorageCorrupted(StorageError):
    """What is stored cannot be read back as written. Never treat it as empty."""


class StorageClosed(StorageError):
    """The store was closed; the call was not carried out."""


class DocumentNotFound(StorageError):
    """The document addressed (by its business id) is not stored."""


class DocumentTooLarge(StorageError):
    """The document would exceed MongoDB's 16 MB limit; the write was not carried out."""


class RecordNotFound(StorageError):
    """The row addressed (a user, a role...) is not stored; nothing was changed."""


class SchemaOutdated(StorageError):
    """The database lacks tables or columns this code needs: migrations were not applied.

    Run ``persistence.relational.migrate`` (``collab migrate``); retrying without it fails again.
    """


class ValueTooLarge(StorageError, ValueError):
    """A value exceeds the port's size limit (the caller's fault); nothing was written."""


class StorageMisconfigured(StorageError):
    """The backend runs with settings under which the port's guarantees cannot hold (e.g. a
    Redis that does not fsync its AOF on every write). Not transient: retrying fails again
    until an operator changes the configuration; the message says what to change.
    """

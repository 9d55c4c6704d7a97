"""The product's exception tree, drawn in one place.

Steps return outcomes rather than raise; these exceptions are for the edges where a caller
cannot go on: bad configuration, a broken store, and so on. Every message names what
happened and what to do next, and never carries patient data or payload text.
"""


class PfhjemError(Exception):
    """Base of every error the product raises on purpose."""


class ConfigError(PfhjemError):
    """The configuration (or a file it names, such as a schema directory) is unusable."""


class StoreError(PfhjemError):
    """The message store cannot be read or written."""


class StoreUnavailable(StoreError):
    """The store's server cannot be reached now (down, starting, overloaded): unlike a
    refused store, this may pass, so the command exits 75 (EX_TEMPFAIL) and a service manager
    starts the daemon again instead of leaving it stopped."""


class ContentRejected(PfhjemError):
    """A message cannot be interpreted; a negative AppRec is due."""


class NeedsOperator(PfhjemError):
    """A message cannot go on without a person deciding (no route, unknown receiver, ...)."""


class TransientDeliveryError(PfhjemError):
    """A delivery failed in a way that may pass (peer down, disk full): retry later."""


class PermanentDeliveryError(PfhjemError):
    """A delivery failed in a way that retrying will not fix (5xx, refused address)."""


class OperatorRefused(PfhjemError):
    """An operator command cannot be done as asked (unknown id, wrong state, missing flag);
    the message says why and what to do instead."""


class NoSuchMessage(StoreError, OperatorRefused):
    """No message has this id: the one error for it, from every backend and every verb.

    It is a ``StoreError`` for the daemon (a row it worked on is gone) and an
    ``OperatorRefused`` for the operator (a mistyped id), so each edge handles it as before."""

    def __init__(self, message_id: int) -> None:
        self.message_id = message_id
        super().__init__(
            f"message {message_id} does not exist: check the id with `pfhjem-msg messages list` "
            "(retention may have removed it)"
        )

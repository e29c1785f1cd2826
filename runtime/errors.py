"""Domain errors. The HTTP layer maps each class to one status code; the message names the field."""

from __future__ import annotations


class ParleyError(Exception):
    """Base class; ``str(err)`` is the client-facing message."""

    code = "ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self):  # keep pickling (Ray moves these between processes) to the plain message
        return (type(self), (self.message,))


class NotFound(ParleyError):
    code = "NOT_FOUND"


class InvalidArgument(ParleyError):
    """The request is well-formed JSON but asks for something impossible (HTTP 400)."""

    code = "INVALID_ARGUMENT"


class ValidationFailed(ParleyError):
    """A field fails validation (HTTP 422; 400 on the OpenAI surface); ``param`` names it."""

    code = "VALIDATION_ERROR"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param

    def __reduce__(self):
        return (type(self), (self.message, self.param))


class LimitExceeded(ValidationFailed):
    """A request goes over an input limit (``runtime.limits``)."""

    code = "LIMIT_EXCEEDED"


class ConversationBusy(ParleyError):
    """Another run holds the conversation: answered with 409 at once, never queued."""

    code = "CONVERSATION_BUSY"

    def __init__(self, message: str, run_id: str | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id

    def __reduce__(self):
        return (type(self), (self.message, self.run_id))

    @classmethod
    def for_run(cls, run_id: str | None) -> ConversationBusy:
        holder = f" (run_id={run_id})" if run_id else ""
        return cls(
            "Cannot send a new message: Another request"
            f"{holder} is currently being processed for this conversation. Please wait for it to complete.",
            run_id,
        )


class Conflict(ParleyError):
    code = "CONFLICT"


class Overloaded(ParleyError):
    """No room to take the request now; the client should retry after ``retry_after`` seconds (503)."""

    code = "OVERLOADED"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def __reduce__(self):
        return (type(self), (self.message, self.retry_after))

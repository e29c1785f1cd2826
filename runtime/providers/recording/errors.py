"""The error of a request that must be answered from recordings but has none."""

from __future__ import annotations

from ..base import ProviderError


class RecordingMissing(ProviderError):
    """No recording answers this request and the mode forbids the network.

    A ``ProviderError`` of kind ``not_found`` that says not to retry: the run that made the
    request fails at once, and the message names the mode and the request's hash (the name under
    which ``record-if-missing`` would store it).
    """

    def __init__(self, mode: str, request_hash: str, endpoint: str, model: str | None) -> None:
        super().__init__(
            f"no recording for {endpoint} (model {model or '-'}) with request hash {request_hash}"
            f" in inference mode {mode!r}; record it with --inference-mode record-if-missing",
            "not_found",
            should_retry=False,
        )
        self.mode = mode
        self.request_hash = request_hash
        self.endpoint = endpoint
        self.model = model

    def __reduce__(self):
        return (type(self), (self.mode, self.request_hash, self.endpoint, self.model))

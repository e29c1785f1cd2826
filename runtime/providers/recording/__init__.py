"""Record-replay inference at the provider HTTP layer.

Every provider adapter talks to its provider through an SDK client whose HTTP transport can be
wrapped (``client.http_client``): in ``record`` mode the wrapper passes each request on and keeps
the response, in ``replay`` mode it answers from the recordings and never opens a connection.
Because it sits under the SDKs, every provider path (OpenAI chat completions, OpenAI Responses,
Anthropic, OpenAI-compatible servers; streamed or not) is covered by the same code.
"""

from .errors import RecordingMissing
from .key import request_key
from .modes import InferenceMode, ReplayTiming
from .store import Recording, RecordingStore

__all__ = ["InferenceMode", "Recording", "RecordingMissing", "RecordingStore", "ReplayTiming", "request_key"]

"""The inference modes and replay timings (``Settings.inference_mode``, ``Settings.replay_timing``)."""

from __future__ import annotations

from typing import Literal

# live: straight to the provider, nothing kept. record: to the provider, every answer kept
# (an existing recording is replaced). replay: answers only from recordings, never the network.
# record-if-missing: replay what is recorded, record the rest.
InferenceMode = Literal["live", "record", "replay", "record-if-missing"]

# instant: a replayed answer arrives as fast as it can be read. recorded: its headers and every
# streamed chunk arrive at the offsets they had when recorded.
ReplayTiming = Literal["instant", "recorded"]

INFERENCE_MODES: tuple[InferenceMode, ...] = ("live", "record", "replay", "record-if-missing")
REPLAY_TIMINGS: tuple[ReplayTiming, ...] = ("instant", "recorded")

"""``parley recordings list|show``: what a recordings directory holds."""

from __future__ import annotations

import argparse
import sys

from runtime.providers.recording import RecordingStore


def list_recordings(store: RecordingStore) -> int:
    """One line per recording, oldest first: hash prefix, endpoint, model, kind, status, timing."""
    rows = store.rows()
    if not rows:
        print(f"no recordings in {store.directory}")
        return 0
    print(f"{'HASH':12}  {'ENDPOINT':22}  {'MODEL':24}  {'KIND':6}  STATUS  CHUNKS  SECONDS  RECORDED AT")
    for row in rows:
        kind = "stream" if row.streamed else "whole"
        print(
            f"{row.hash[:12]}  {row.endpoint:22}  {(row.model or '-'):24}  {kind:6}  {row.status:6}"
            f"  {row.chunks:6}  {row.duration:7.3f}  {row.recorded_at}"
        )
    print(f"{len(rows)} recordings in {store.directory}")
    return 0


def show_recording(store: RecordingStore, prefix: str) -> int:
    """The JSON file of the one recording whose hash starts with ``prefix``."""
    found = store.find(prefix.lower())
    if len(found) != 1:
        why = "no recording" if not found else f"{len(found)} recordings"
        print(f"{why} with a hash starting {prefix!r} in {store.directory}", file=sys.stderr)
        return 1
    print(store.file_of(found[0]).read_text(encoding="utf-8"), end="")
    return 0


def main(args: argparse.Namespace) -> int:
    from runtime.settings import Settings

    directory = args.recordings or Settings.from_env().resolved_recordings_dir
    store = RecordingStore(directory)
    if args.action == "list":
        return list_recordings(store)
    return show_recording(store, args.hash)

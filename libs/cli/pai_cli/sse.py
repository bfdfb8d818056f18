"""Server-Sent Events, line by line (the part of the WHATWG format the job stream uses). Pure."""

from __future__ import annotations

import json

from pai_cli.models import StreamEvent


class SseParser:
    """Feed it the stream's lines (without their line ends); it answers an event at each blank line."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: int | None = None

    def feed(self, line: str) -> StreamEvent | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: the server's keep-alive
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and value.isdigit():
            self._id = int(value)
        return None

    def _dispatch(self) -> StreamEvent | None:
        event, data, event_id = self._event or "message", "\n".join(self._data), self._id
        self._event, self._data = "", []
        if not data:
            return None
        try:
            body = json.loads(data)
        except ValueError:
            body = {"text": data}
        return StreamEvent(event=event, id=event_id, data=body if isinstance(body, dict) else {"value": body})

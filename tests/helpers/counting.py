"""A client wrapper that counts the calls made through it: how many requests a reader or
writer of a search sends to the tracking store."""

from __future__ import annotations

from typing import Any


class Counting:
    """Wraps a client (e.g. an `MlflowStore`'s) and records the name of every method called."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return attr(*args, **kwargs)

        return call


def count_calls(store: Any) -> Counting:
    """Count from now on the calls that `store` (an `MlflowStore`) makes to its client."""
    counting = Counting(store.client)
    store._client = counting
    return counting

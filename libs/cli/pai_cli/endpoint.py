"""One definition per route for both clients: ``Endpoint(routes.get_job)`` is ``PaiClient.get_job`` (which
answers a ``JobDetail``) and ``AsyncPaiClient.get_job`` (which answers an awaitable of it), with the route
function's signature minus its first argument (the client) and its docstring.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from pai_cli.routes import Call, Context

P = ParamSpec("P")
T = TypeVar("T")


class SyncRunner:
    """A client whose endpoints answer at once."""

    def _run(self, call: Call[T]) -> T:
        raise NotImplementedError


class AsyncRunner:
    """A client whose endpoints answer awaitables."""

    async def _run(self, call: Call[T]) -> T:
        raise NotImplementedError


class Endpoint(Generic[P, T]):
    def __init__(self, build: Callable[Concatenate[Context, P], Call[T]]) -> None:
        self.build = build
        self.__doc__ = build.__doc__

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Endpoint[P, T]: ...

    @overload
    def __get__(self, obj: SyncRunner, owner: type[Any]) -> Callable[P, T]: ...

    @overload
    def __get__(self, obj: AsyncRunner, owner: type[Any]) -> Callable[P, Coroutine[Any, Any, T]]: ...

    def __get__(self, obj: Any, owner: type[Any]) -> Any:
        if obj is None:
            return self
        build = self.build

        def bound(*args: Any, **kwargs: Any) -> Any:
            return obj._run(build(obj, *args, **kwargs))

        bound.__doc__ = build.__doc__
        bound.__name__ = build.__name__
        return bound

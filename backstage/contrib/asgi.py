"""FastAPI / Starlette (asyncio) apps: one :class:`AsyncClient` per app, opened and closed by its lifespan.

::

    api = FastAPI(lifespan=backstage_lifespan(app))

    @api.post("/orders")
    async def create(request: Request) -> dict:
        job_id = await client_of(request).enqueue("order.process", {...})

The lifespan opens the client (and checks that Redis answers) at start-up,
keeps it on ``api.state.backstage``, and closes it at shutdown. Nothing
here imports FastAPI or Starlette: any ASGI framework whose lifespan takes
the application object works. Runs in the web app's process.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, TypeVar

if TYPE_CHECKING:
    from ..app import Backstage, Task
    from ..client import AsyncClient

__all__ = ["backstage_lifespan", "client_of", "enqueue", "STATE_ATTR"]

T = TypeVar("T")

#: The attribute of ``api.state`` that holds the client.
STATE_ATTR = "backstage"


def backstage_lifespan(app: "Backstage", *, then: Callable[[Any], Any] | None = None,
                       check: bool = True) -> Callable[[Any], contextlib.AbstractAsyncContextManager[Any]]:
    """A lifespan function for ``FastAPI(lifespan=...)`` / ``Starlette(lifespan=...)``.

    Args:
        app: the Backstage app whose settings and task defaults the client uses.
        then: your own lifespan, run inside ours (the client is open while it runs);
            whatever it yields is yielded on.
        check: ping Redis at start-up, so a wrong URL fails the start, not the first request.
    """

    @contextlib.asynccontextmanager
    async def lifespan(asgi_app: Any) -> AsyncIterator[Any]:
        client = app.async_client()
        try:
            if check:
                await client.ping()
            setattr(asgi_app.state, STATE_ATTR, client)
            if then is None:
                yield None
            else:
                async with then(asgi_app) as state:
                    yield state
        finally:
            try:
                delattr(asgi_app.state, STATE_ATTR)
            except AttributeError:
                pass
            await client.aclose()

    return lifespan


def client_of(request: Any) -> "AsyncClient":
    """The app's :class:`AsyncClient`, from a request (or a FastAPI ``Depends``)."""
    try:
        return getattr(request.app.state, STATE_ATTR)  # type: ignore[no-any-return]
    except AttributeError:
        raise RuntimeError("no Backstage client on this app: create it with "
                           "FastAPI(lifespan=backstage_lifespan(app))") from None


async def enqueue(request: Any, task: "Task[T, Any]", payload: T, **options: Any) -> str | None:
    """Enqueue a typed task from a request handler: the payload is checked
    against the task's annotation (InvalidJobError naming the field) and sent
    with the app's :class:`AsyncClient`; returns the job id."""
    if task.codec is not None:
        payload = task.codec.check(payload)
    return await client_of(request).enqueue(task.name, payload, **options)

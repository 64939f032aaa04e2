"""The Python client for a longtask server: `Client` (sync) and `AsyncClient` (async).

    from longtask.client import Client

    with Client("http://127.0.0.1:8000", api_key="lt_...") as lt:
        task = lt.submit("demo", {"steps": 5})
        for event in lt.follow(task.id):     # reconnects by itself; never repeats an event
            print(event.seq, event.type, event.data)
        print(lt.wait(task.id).result)

Both clients take the same arguments and have the same methods (the async ones are awaited or,
for `follow` and `iter_tasks`, iterated with `async for`). Errors are `longtask.client.errors`.

This package needs httpx, httpx-sse and rich only: `pip install longtask` installs just that.
"""

from longtask.client.aio import AsyncClient
from longtask.client.errors import ClientError
from longtask.client.models import Event, SearchHit, Stats, Task, TaskPage, Upload
from longtask.client.sync import Client

__all__ = ["AsyncClient", "Client", "ClientError", "Event", "SearchHit", "Stats", "Task",
           "TaskPage", "Upload"]

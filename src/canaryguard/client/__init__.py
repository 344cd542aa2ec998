"""The canaryguard client SDK: standard library and httpx only.

::

    from canaryguard.client import Client

    client = Client("http://canaryguard:8000", token, ["payments/security"])
    assignment = client.assign("payments/security", user_id=user.id)
    with client.track(assignment):
        handle(request, policy=assignment.document)
"""

from canaryguard.client._async import AsyncClient
from canaryguard.client._client import Client, ClientStats, NotReady
from canaryguard.client._middleware import ASGIMiddleware, WSGIMiddleware
from canaryguard.client._state import Assignment, PolicyVersion

__all__ = [
    "ASGIMiddleware",
    "Assignment",
    "AsyncClient",
    "Client",
    "ClientStats",
    "NotReady",
    "PolicyVersion",
    "WSGIMiddleware",
]

"""The physical floor of the server: a bare ASGI app under the same daphne, reading the request
body and answering a small JSON body like the initiation's, with no framework at all. What
opsdash's answers cost is measured against what daphne itself costs."""

import json

BODY = json.dumps({"type": "conversation_initiation_client_data", "dynamic_variables": {}}).encode()
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["method"] != "POST":  # as the webhook answers (the bench waits for this)
        await send({"type": "http.response.start", "status": 405, "headers": [(b"allow", b"POST")]})
        await send({"type": "http.response.body", "body": b""})
        return
    more = True
    while more:  # the whole body, as an app that reads its JSON would
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})

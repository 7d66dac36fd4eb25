"""Synchronous requests (/segment, /cam, /cam/refined): computed by an engine in the API
process, or by the workers over the realtime queue, with dynamic batching.

* `messages`: the request/reply records and their Redis keys.
* `compute`: decode, batch, run and render requests on an engine (both paths).
* `client`: the API side of the worker path (hand-over, deadline, back-pressure).
* `server`: the worker side (drain the pending requests, batching window, replies).
* `fleet`: the API's cached view of the live workers (readiness, models).
"""

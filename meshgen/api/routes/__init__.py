"""The API's own routers, one module per resource; meshgen.api.app includes them in this order.

Each endpoint is a module-level function that takes what it needs as typed dependencies:
the app's state (`AppState`, or `ReadAccess` / `WriteAccess`, which check the bearer token
first; meshgen.api.state), `RecordsDep` and `EnqueueDep` (meshgen.api.deps).
"""

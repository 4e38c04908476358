"""The API's own routers, one module per resource, added to each app by meshgen.api.app.

The routers are module-level and shared by every app, so nothing of one app sticks to them: an
endpoint is a plain function that takes what it needs as typed dependencies, the app's state
(`AppState`, or `ReadAccess` / `WriteAccess`, which check the bearer token first; see
meshgen.api.state), `RecordsDep` and `EnqueueDep` (meshgen.api.deps).
"""

"""The small app the GitOps benchmark serves with uvicorn: only the webhook router (settings from MESHGEN_*)."""

from fastapi import FastAPI

from meshgen.api.webhooks import router

app = FastAPI()
app.include_router(router, prefix="/api/v1/webhooks")

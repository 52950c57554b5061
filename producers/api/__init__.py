"""The HTTP API (FastAPI): ingest, status, users and preferences, provider webhooks, health."""
from producers.api.app import create_api

__all__ = ["create_api"]

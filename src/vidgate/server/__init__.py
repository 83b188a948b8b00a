"""The HTTP service: OpenAI-compatible /v1/videos, the native /v1/jobs API, a dashboard."""

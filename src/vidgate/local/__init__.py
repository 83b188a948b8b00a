"""The vidgate model server: one diffusers pipeline served over HTTP (`vidgate model serve`).

This package imports torch and diffusers (the ``local`` extra) inside the modules that run
the pipeline; the gateway never imports it — it talks to a running server through
``vidgate.providers.local_diffusers``, over the protocol in docs/model-server-protocol.md.
``protocol``, ``shapes`` and ``families`` import no torch, so the rules are readable without it.
"""

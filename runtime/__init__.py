"""corral's NumPy CPU runtime for GGUF models.

A library on its own: it knows nothing of HTTP, asyncio, YAML, manifests or
the daemon, and imports only numpy, gguf, jinja2, regex and the standard library.
"""

"""HTTP transport adapters: the only package that imports FastAPI/Starlette."""

"""The REST front end: the FastAPI control plane, the inference fast lane, the TF Serving and V2 handlers, and the
uvicorn server around them. The only package that imports FastAPI or Starlette.
"""

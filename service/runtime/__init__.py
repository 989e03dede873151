"""Runtimes turn a model version on disk into a servable that runs signatures on numpy inputs."""

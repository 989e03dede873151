"""TF Serving's command line and config files -> rtserve's Settings and a model set (``tensorflow_model_server``)."""

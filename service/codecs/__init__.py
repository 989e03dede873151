"""Wire <-> numpy codecs: pure functions, no HTTP framework.

``json_io`` parses and writes JSON, ``arrays`` holds the one set of value rules both protocols share,
``tfserving_json`` and ``v2_json`` are the TF Serving REST and Open Inference Protocol JSON bodies.
"""

"""The ``tensorflow_model_server`` command: TF Serving's command line, served by rtserve (``rtserve serve``)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from service import __version__
from service.cli import quiet_libraries, serve
from service.compat.flags import parse_flags, usage
from service.compat.translate import settings_from_flags
from service.observability.logs import configure_logging

log = logging.getLogger("rtserve.compat")

# TF Serving's main() returns -1 when its flags do not parse.
USAGE_EXIT = 255


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parsed = parse_flags(args)
    if parsed.help:
        print(usage(), end="")
        return 0
    if parsed.errors:
        for error in parsed.errors:
            print(error, file=sys.stderr)
        print(usage(), end="")
        return USAGE_EXIT
    if parsed.given.get("version"):
        print(f"TensorFlow ModelServer: rtserve-{__version__}")
        return 0
    if parsed.unknown:
        # As TF Serving: the first leftover argument is named, the usage shown, and the server starts anyway.
        print(f"unknown argument: {parsed.unknown[0]}")
        print(usage(), end="")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        translation = settings_from_flags(parsed)
    except ValueError as error:  # a config file that does not parse, flags TF Serving refuses too
        print(error, file=sys.stderr)
        return 1
    settings = translation.settings
    configure_logging(settings.log_level, settings.log_format)
    quiet_libraries()
    for warning in translation.warnings:
        log.warning("%s", warning)
    try:
        return serve(settings)
    except ValueError as error:
        print(f"tensorflow_model_server: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

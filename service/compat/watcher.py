"""Re-reads a TF Serving model config file and applies it as the new model set (``--model_config_file`` with
``--model_config_file_poll_wait_seconds``): models added and removed without a restart.

A file that no longer reads or parses, or a set the manager refuses, leaves the current set serving; the problem is
logged and counted once per version of the file (not at every poll). The waiting is injected, so that a test
drives the polls without sleeping.

As in TF Serving, whose poll thread hands the file to ServerCore::ReloadConfig at every poll, the file wins: a set
pushed meanwhile by HandleReloadConfigRequest (seen as a change of ``applied``, the manager's count of sets
applied) is replaced by the file's at the next poll, changed or not.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from service.errors import ServingError
from service.model_set import ModelSet

log = logging.getLogger(__name__)


@dataclass
class ConfigFileWatcher:
    """``read`` gives the file's text (OSError when it cannot), ``parse`` turns it into a ModelSet (ValueError
    when it cannot), ``apply`` serves it (ServingError or ValueError when refused; it counts that itself), and
    ``failed`` counts a file that never reached ``apply``."""

    read: Callable[[], str]
    parse: Callable[[str], ModelSet]
    apply: Callable[[ModelSet], None]
    failed: Callable[[], None]
    interval_s: float
    current: ModelSet | None = None
    # The manager's count of model sets applied (ModelSetStatus.applied); None: nothing else changes the set.
    applied: Callable[[], int] | None = None
    _seen_applied: int = 0  # that count after the watcher's own last apply (the start's set is not counted)
    _last_text: str | None = None  # the text of the last poll (a NUL-prefixed key when it could not be read)
    _last_refused: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def poll_once(self) -> bool:
        """Read the file and apply it when it holds a new model set; True when a new set was applied."""
        try:
            text = self.read()
        except OSError as error:
            return self._refuse(f"\0unreadable: {error}", f"cannot read the model config file: {error}", True)
        if text == self._last_text:
            # Unchanged since the last poll: applied, the same set, or already reported; applied again only when
            # another set replaced it meanwhile.
            if self._last_refused is None and self.current is not None and self._replaced():
                log.info("model config file applied again: a HandleReloadConfigRequest had replaced its model set")
                return self._apply(text, self.current)
            return False
        self._last_text = text
        try:
            model_set = self.parse(text)
        except ValueError as error:
            return self._refuse(text, str(error), True)
        if model_set == self.current and not self._replaced():
            self._last_refused = None
            return False
        return self._apply(text, model_set)

    def _replaced(self) -> bool:
        return self.applied is not None and self.applied() != self._seen_applied

    def _apply(self, text: str, model_set: ModelSet) -> bool:
        try:
            self.apply(model_set)
        except (ServingError, ValueError) as error:
            return self._refuse(text, str(error), False)
        self.current, self._last_refused = model_set, None
        if self.applied is not None:
            self._seen_applied = self.applied()
        log.info("model config file applied: %s", ", ".join(m.name for m in model_set.config) or "no models")
        return True

    def _refuse(self, key: str, message: str, count: bool) -> bool:
        if key == self._last_refused:
            return False
        self._last_refused = self._last_text = key
        if count:
            self.failed()
        log.error("model config file not applied, the current model set keeps serving: %s", message)
        return False

    def run(self, wait: Callable[[float], bool] | None = None) -> None:
        """Poll every ``interval_s`` until ``wait`` (default: the stop event's) returns True."""
        wait = wait or self._stop.wait
        while not wait(self.interval_s):
            try:
                self.poll_once()
            except Exception:  # a bug here must not end the re-reading; the set serving is unaffected
                log.exception("model config file poll failed")

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="model-config-file", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

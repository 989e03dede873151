"""The model config file watcher (--model_config_file_poll_wait_seconds): a changed file is applied as the new
model set, a broken one leaves the current set serving (logged, counted once), a removed model is dropped. The
polls are driven by hand or by an injected wait: nothing sleeps. The manager is the real one over fake versions
(tests/fakes.py), so "applied" means the manager's snapshot changed."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from fakes import FakeLoader, write_fake_version
from service.compat.config_files import parse_model_server_config
from service.compat.watcher import ConfigFileWatcher
from service.manager import ModelManager
from service.model_set import ModelSet
from service.observability.metrics import Metrics
from service.repository.local import LocalRepository
from service.settings import Settings


def config_text(**bases: Path) -> str:
    models = "".join(
        f"  config {{ name: '{name}' base_path: '{base}' model_platform: 'tensorflow' }}\n"
        for name, base in bases.items()
    )
    return "model_config_list {\n" + models + "}\n"


def publish(tmp_path: Path, name: str) -> Path:
    base = tmp_path / "bases" / name
    source = write_fake_version(tmp_path / "src" / name, 1)
    LocalRepository(base.parent).upload_version(name, 1, source)
    return base


class Setup:
    """A manager serving the file's first text, and a watcher over a file the test rewrites."""

    def __init__(self, tmp_path: Path, text: str) -> None:
        self.file = tmp_path / "models.config"
        self.file.write_text(text)
        first = parse_model_server_config(text)
        root = tmp_path / "repo"
        root.mkdir()
        settings = Settings(repository=str(root), cache_dir=str(tmp_path / "cache"), model_config_list=first)
        self.metrics = Metrics(CollectorRegistry())
        self.manager = ModelManager(
            settings,
            LocalRepository(root),
            FakeLoader(),
            self.metrics,
            clock=lambda: 1000.0,
            after_load_change=lambda _: None,
        )
        self.manager.poll_once()
        self.applied: list[ModelSet] = []
        self.watcher = ConfigFileWatcher(
            read=self.file.read_text,
            parse=parse_model_server_config,
            apply=self.apply,
            failed=self.metrics.model_config_reloads.labels("failure").inc,
            interval_s=30.0,
            current=first,
            applied=lambda: self.manager.model_set_status().applied,
        )

    def apply(self, model_set: ModelSet) -> None:
        self.manager.apply_model_set(model_set, wait=True)
        self.applied.append(model_set)
        self.manager.poll_once()  # the listing of the new models, which the manager's own poll would do next

    def served(self) -> list[str]:
        return sorted(self.manager.snapshot())

    def reloads(self, outcome: str) -> float:
        sample = self.metrics.registry.get_sample_value("rtserve_model_config_reloads_total", {"outcome": outcome})
        return sample or 0.0


def test_a_changed_file_is_applied_adding_and_dropping_models(tmp_path: Path) -> None:
    a, b, c = (publish(tmp_path, name) for name in "abc")
    setup = Setup(tmp_path, config_text(a=a, b=b))
    assert setup.served() == ["a", "b"]
    assert setup.watcher.poll_once() is False, "an unchanged file is not applied again"
    setup.file.write_text(config_text(a=a, c=c))
    assert setup.watcher.poll_once() is True
    assert setup.served() == ["a", "c"], "b removed from the file is dropped, c added is served"
    assert setup.reloads("success") == 1
    assert setup.watcher.poll_once() is False
    assert len(setup.applied) == 1


def test_a_set_pushed_by_reload_config_is_replaced_by_the_files_at_the_next_poll(tmp_path: Path) -> None:
    # TF Serving's poll thread hands the file to ServerCore::ReloadConfig at every poll: the file wins.
    a, b = publish(tmp_path, "a"), publish(tmp_path, "b")
    setup = Setup(tmp_path, config_text(a=a))
    setup.manager.apply_model_set(parse_model_server_config(config_text(a=a, b=b)), wait=True)  # the RPC's way
    setup.manager.poll_once()
    assert setup.served() == ["a", "b"]
    assert setup.watcher.poll_once() is True, "the unchanged file is applied again"
    assert setup.served() == ["a"]
    assert setup.watcher.poll_once() is False, "and only once"
    setup.manager.apply_model_set(parse_model_server_config(config_text(b=b)), wait=True)
    setup.file.write_text(config_text(a=a) + "\n")  # the same set, another text: still the file's set wins
    assert setup.watcher.poll_once() is True
    assert setup.served() == ["a"]


def test_a_broken_file_keeps_the_current_set_and_is_counted_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = publish(tmp_path, "a"), publish(tmp_path, "b")
    setup = Setup(tmp_path, config_text(a=a, b=b))
    setup.file.write_text("model_config_list {\n  config { nme: 'a' }\n}\n")
    assert setup.watcher.poll_once() is False
    assert setup.watcher.poll_once() is False
    assert setup.served() == ["a", "b"]
    assert setup.applied == []
    assert setup.reloads("failure") == 1, "counted once per version of the file, not per poll"
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig: 2:12" in caplog.text
    setup.file.write_text(config_text(a=a))  # fixed: applied at the next poll
    assert setup.watcher.poll_once() is True
    assert setup.served() == ["a"]


def test_a_set_the_manager_refuses_keeps_the_current_set(tmp_path: Path) -> None:
    a = publish(tmp_path, "a")
    setup = Setup(tmp_path, config_text(a=a))
    setup.file.write_text(config_text(a=a, gone=tmp_path / "no" / "such" / "base"))
    assert setup.watcher.poll_once() is False
    assert setup.watcher.poll_once() is False
    assert setup.served() == ["a"]
    assert setup.reloads("failure") == 1, "the manager counts its refusal; the watcher does not retry it each poll"


def test_an_unreadable_file_keeps_the_current_set(tmp_path: Path) -> None:
    a = publish(tmp_path, "a")
    setup = Setup(tmp_path, config_text(a=a))
    setup.file.unlink()
    assert setup.watcher.poll_once() is False
    assert setup.watcher.poll_once() is False
    assert setup.served() == ["a"]
    assert setup.reloads("failure") == 1


def test_run_polls_at_the_interval_until_stopped(tmp_path: Path) -> None:
    a, b = publish(tmp_path, "a"), publish(tmp_path, "b")
    setup = Setup(tmp_path, config_text(a=a))
    waits: list[float] = []

    def wait(seconds: float) -> bool:  # the injected wait: the second call rewrites the file, the fourth stops
        waits.append(seconds)
        if len(waits) == 2:
            setup.file.write_text(config_text(b=b))
        return len(waits) == 4

    setup.watcher.run(wait)
    assert waits == [30.0, 30.0, 30.0, 30.0]
    assert setup.served() == ["b"]
    assert len(setup.applied) == 1


def test_create_app_reads_the_file_and_starts_the_watcher_with_the_components(tmp_path: Path) -> None:
    from service.app import create_app

    a, b = publish(tmp_path, "a"), publish(tmp_path, "b")
    models = tmp_path / "models.config"
    models.write_text(config_text(a=a))
    base = {"repository": str(tmp_path / "repo"), "cache_dir": str(tmp_path / "cache"), "grpc_port": 0}
    once = create_app(Settings(**base, model_config_file=str(models)), loader=FakeLoader())
    assert list(once.components.manager.model_set_status().models) == ["a"]
    assert once.components.config_file is None, "poll wait 0: read once"
    app = create_app(
        Settings(**base, model_config_file=str(models), model_config_file_poll_wait_s=30), loader=FakeLoader()
    )
    watcher = app.components.config_file
    assert watcher is not None
    assert watcher.interval_s == 30
    models.write_text(config_text(a=a, b=b))
    app.components.start()
    try:
        assert watcher.poll_once() is True
        assert list(app.components.manager.model_set_status().models) == ["a", "b"]
    finally:
        app.components.stop()
    assert watcher._thread is None, "stopped with the components"

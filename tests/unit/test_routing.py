"""serving.json: parsing, validation messages, and the default route a snapshot precomputes."""

from __future__ import annotations

import itertools

import pytest

from service.manager.routing import (
    DefaultRoute,
    ServingConfig,
    check_named_versions,
    format_activation,
    parse_activation,
    parse_serving_config,
    usable_version,
)

NOON = parse_activation("2026-11-25T12:00:00Z")


def test_full_document_round_trips() -> None:
    text = (
        b'{"default": "stable", "labels": {"stable": 3, "canary": 4}, "canary_weight": 0.1,'
        b' "activate_at": "2026-11-25T12:00:00Z", "previous_default": 2}'
    )
    config = parse_serving_config(text)
    assert config == ServingConfig("stable", {"stable": 3, "canary": 4}, 0.1, NOON, 2)
    assert config.target() == 3
    assert parse_serving_config(config.to_json()) == config
    assert b'"activate_at": "2026-11-25T12:00:00.000Z"' in config.to_json()


def test_activation_times_need_a_zone() -> None:
    assert parse_activation("2026-11-25T13:00:00+01:00") == NOON
    assert format_activation(NOON + 0.25) == "2026-11-25T12:00:00.250Z"
    with pytest.raises(ValueError, match="no time zone"):
        parse_activation("2026-11-25T12:00:00")
    with pytest.raises(ValueError, match="not an ISO 8601 time"):
        parse_activation("tomorrow at noon")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"[]", "must be a JSON object"),
        (b'{"default": 1, "canary_wieght": 0.5}', "unknown field 'canary_wieght'"),
        (b'{"default": "stable"}', "'default' must be a positive version or one of its labels"),
        (b'{"default": 0}', "'default' must be a positive version"),
        (b'{"labels": {"stable": "3"}}', "label 'stable' must map to a positive version"),
        (b'{"labels": {"7": 3}}', "label '7' is not a valid label name"),
        (b'{"default": 1, "canary_weight": 0.1}', "needs a 'canary' label"),
        (b'{"default": 1, "labels": {"canary": 2}, "canary_weight": 1.5}', "'canary_weight' must be a number"),
        (b'{"default": 1, "labels": {"canary": 2}, "canary_weight": true}', "'canary_weight' must be a number"),
        (b'{"default": 2, "activate_at": 1764072000}', "'activate_at' must be a time in ISO 8601"),
        (b'{"default": 2, "activate_at": "2026-11-25T12:00:00"}', "'activate_at': .* has no time zone"),
        (b'{"activate_at": "2026-11-25T12:00:00Z"}', "'activate_at' needs a 'default'"),
        (b'{"default": 2, "previous_default": 1}', "'previous_default' only applies with 'activate_at'"),
        (b'{"default": 2, "activate_at": "2026-11-25T12:00:00Z", "previous_default": -1}', "'previous_default' must"),
        # Values that used to pass parsing and crash (or mislead) later: each is refused here, by name.
        (b'{"default": 2, "activate_at": "0001-01-01T00:00:00+01:00"}', "'activate_at': .* out of the range"),
        (b'{"default": 2, "activate_at": "9999-12-31T23:59:59-01:00"}', "'activate_at': .* out of the range"),
        (b'{"default": 1000000000000000000}', "'default' must be a positive version"),
        (b'{"labels": {"stable": 18446744073709551615}}', "label 'stable' must map to a positive version"),
        (b'{"default": 1e999}', "not valid JSON"),
        (b'{"default": 1, "labels": {"canary": 2}, "canary_weight": NaN}', "not valid JSON"),
        (b'{"default": "\xff"}', "not valid JSON"),
        (b'{"default": "\\ud800"}', "not valid JSON"),  # a lone surrogate escape
        (b"{" + b" " * 65536 + b"}", "larger than 65536 bytes"),
        # Wrong types, each named by its field; with several problems, the one reported is the same as ever.
        (b'"stable"', "must be a JSON object"),
        (b'{"zz": 1, "default": 0, "aa": 2}', "unknown field 'aa'"),
        (b'{"labels": []}', "'labels' must be an object of label -> version"),
        (b'{"labels": {"a b": 1}}', "label 'a b' is not a valid label name"),
        (b'{"labels": {"stable": 1, "canary": true}}', "label 'canary' must map to a positive version"),
        (b'{"default": true}', "'default' must be a positive version"),
        (b'{"default": 2.0}', "'default' must be a positive version"),
        (b'{"default": 1, "labels": {"canary": 2}, "canary_weight": "0.1"}', "'canary_weight' must be a number"),
        (b'{"default": 1, "labels": {"canary": 2}, "canary_weight": null}', "'canary_weight' must be a number"),
        (b'{"default": 1, "labels": {"canary": 2}, "canary_weight": -0.5}', "'canary_weight' must be a number"),
        (b'{"default": 2, "previous_default": "two"}', "'previous_default' only applies with 'activate_at'"),
        (b'{"default": "x", "canary_weight": 2}', "'default' must be a positive version or one of its labels"),
        (b'{"activate_at": 5, "previous_default": 0}', "'activate_at' must be a time in ISO 8601"),
        (
            b'{"default": 1, "activate_at": "soon", "previous_default": 18446744073709551615}',
            "'previous_default' must be a positive version number",
        ),
    ],
)
def test_invalid_documents_name_the_problem(document: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_serving_config(document)


def test_the_message_is_one_whole_line() -> None:
    with pytest.raises(ValueError) as caught:
        parse_serving_config(b'{"default": 1, "canary_wieght": 0.5}')
    assert str(caught.value) == (
        "serving.json has unknown field 'canary_wieght' "
        "(known: default, labels, canary_weight, activate_at, previous_default)"
    )


def test_integral_weights_and_absent_fields_take_their_defaults() -> None:
    assert parse_serving_config(b"{}") == ServingConfig()
    config = parse_serving_config(b'{"default": 1, "labels": {"canary": 2}, "canary_weight": 1, "activate_at": null}')
    assert config == ServingConfig(1, {"canary": 2}, 1.0)
    assert isinstance(config.canary_weight, float)


def test_without_activation_the_default_applies_at_once() -> None:
    route = ServingConfig(default=2).route({1, 2})
    assert route.version_at(0.0) == 2
    assert route.pending_at(0.0) is None
    # A default that is not AVAILABLE falls back to the newest version that is.
    assert ServingConfig(default=3).route({1, 2}).version_at(0.0) == 2
    assert ServingConfig().route(set()).version_at(0.0) is None


def test_activation_switches_exactly_at_its_time() -> None:
    route = ServingConfig(default=2, activate_at=NOON, previous_default=1).route({1, 2})
    assert route.version_at(NOON - 0.001) == 1
    assert route.pending_at(NOON - 0.001) == 2
    assert route.version_at(NOON) == 2
    assert route.pending_at(NOON) is None
    assert not route.blocked(NOON)


def test_a_due_default_that_is_not_available_keeps_the_old_one() -> None:
    route = ServingConfig(default=2, activate_at=NOON, previous_default=1).route({1})
    assert route.version_at(NOON + 60) == 1
    assert route.blocked(NOON + 60)
    assert route.pending_at(NOON + 60) == 2
    assert not route.blocked(NOON - 1)


def test_before_the_switch_the_new_version_is_no_fallback() -> None:
    # The previous default is gone here (say it failed): serve another version, not the one that is not due yet.
    route = ServingConfig(default=3, activate_at=NOON, previous_default=1).route({2, 3})
    assert route.version_at(NOON - 1) == 2
    assert usable_version(None, {3}, avoid=3) == 3  # unless it is the only one


def test_versions_to_load_include_the_previous_default_until_the_switch() -> None:
    config = ServingConfig("stable", {"stable": 3, "canary": 4}, 0.0, NOON, previous_default=2)
    assert config.versions_to_load(NOON - 1) == {2, 3, 4}
    assert config.versions_to_load(NOON) == {3, 4}
    assert config.effective_default(NOON - 1) == 2
    assert config.effective_default(NOON) == 3


def test_canary_weight_splits_default_requests() -> None:
    route = ServingConfig(1, {"canary": 2}, canary_weight=0.25).route({1, 2})
    draws = itertools.cycle([0.0, 0.3, 0.6, 0.9])
    picks = [route.pick(0.0, lambda: next(draws)) for _ in range(8)]
    assert picks == [2, 1, 1, 1, 2, 1, 1, 1]
    # A canary version that is not AVAILABLE takes nothing; no draw is even made without a canary.
    assert ServingConfig(1, {"canary": 3}, canary_weight=0.25).route({1}).canary is None
    assert DefaultRoute(before=1).pick(0.0, lambda: pytest.fail("drew without a canary")) == 1


def test_a_file_naming_versions_the_repository_lacks_cannot_be_applied() -> None:
    config = parse_serving_config(b'{"default": "stable", "labels": {"stable": 1, "canary": 4}}')
    check_named_versions(config, {1, 4}, NOON)
    with pytest.raises(ValueError, match="names version 4, which the repository does not hold"):
        check_named_versions(config, {1, 2, 3}, NOON)
    # After the switch the previous default no longer matters: it may be gone from the repository.
    activation = parse_serving_config(b'{"default": 2, "activate_at": "2026-11-25T12:00:00Z", "previous_default": 1}')
    check_named_versions(activation, {2}, NOON)
    with pytest.raises(ValueError, match="names version 1"):
        check_named_versions(activation, {2}, NOON - 1)

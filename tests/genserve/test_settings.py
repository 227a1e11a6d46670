"""Settings: defaults, constructor overrides (nested too) and the CLI flags that build them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from genserve.cli import _parser, build_settings
from genserve.settings import BatchingSettings, GatewaySettings, Settings, WorkerSettings


class DefaultsOnly(Settings):
    """Settings with only constructor arguments as a source, so the environment cannot leak in."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def settings_from(argv: list[str]) -> Settings:
    return build_settings(_parser().parse_args(argv))


def test_defaults_are_the_embedded_single_machine_mode() -> None:
    """With nothing set: embedded (no broker), loopback on 50051, batching on, auto provider."""
    settings = DefaultsOnly()
    assert settings.broker_url is None and settings.embedded and settings.backend_url is None
    assert settings.model_repository == Path("model_repository")
    assert settings.queue_for("vae") == "genserve.vae"
    assert (settings.gateway.host, settings.gateway.port) == ("127.0.0.1", 50051)
    assert settings.batching == BatchingSettings(
        enabled=True, max_batch_samples=256, max_queue_delay_ms=5.0, max_inflight_batches=0
    )
    assert settings.worker.queues == [] and settings.worker.execution_provider == "auto"
    assert settings.limits.max_count == 4096


def test_broker_url_switches_to_distributed_and_is_the_result_backend() -> None:
    """A broker URL turns embedded off; the result backend defaults to it unless set."""
    settings = Settings(broker_url="redis://h:6379/0", result_backend=None)
    assert not settings.embedded and settings.backend_url == "redis://h:6379/0"
    other = Settings(broker_url="redis://h:6379/0", result_backend="redis://r:6379/1")
    assert other.backend_url == "redis://r:6379/1"


def test_constructor_overrides_top_level_fields() -> None:
    """Constructor arguments win: repository path, queue prefix and log level."""
    settings = Settings(model_repository="/tmp/models", queue_prefix="t1", log_level="DEBUG")
    assert settings.model_repository == Path("/tmp/models")
    assert settings.queue_for("cvae") == "t1.cvae" and settings.log_level == "DEBUG"


def test_nested_override_by_dict_or_model() -> None:
    """A nested section can be overridden with a dict (one knob) or a model instance."""
    settings = DefaultsOnly(batching={"max_queue_delay_ms": 0.5}, gateway=GatewaySettings(port=0))
    assert settings.batching.max_queue_delay_ms == 0.5
    assert settings.batching.max_inflight_batches == 0  # untouched knobs keep their defaults (0: auto)
    assert settings.gateway.port == 0 and settings.gateway.host == "127.0.0.1"


def test_invalid_provider_is_rejected() -> None:
    """execution_provider accepts only auto, cpu, cuda and tensorrt."""
    with pytest.raises(ValidationError, match="execution_provider"):
        WorkerSettings(execution_provider="rocm")


@pytest.mark.parametrize(
    "value, expected", [("vae, cvae,,gan ", ["vae", "cvae", "gan"]), ("", []), (["vae"], ["vae"])]
)
def test_worker_queues_accept_a_comma_string(value: object, expected: list[str]) -> None:
    """Queues given as "a, b,,c" become a clean list; a list passes unchanged."""
    assert WorkerSettings(queues=value).queues == expected
    assert Settings(worker={"queues": value}).worker.queues == expected


def test_serve_flags_become_settings() -> None:
    """Every serve flag lands in its settings field, nested ones included."""
    settings = settings_from(
        [
            "serve",
            "--repository",
            "/srv/models",
            "--broker-url",
            "redis://b:6379/2",
            "--log-level",
            "WARNING",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--no-batching",
            "--queues",
            "vae,cvae",
            "--provider",
            "cpu",
            "--threads",
            "3",
            "--concurrency",
            "4",
        ]
    )
    assert settings.model_repository == Path("/srv/models")
    assert settings.broker_url == "redis://b:6379/2" and not settings.embedded
    assert settings.log_level == "WARNING"
    assert (settings.gateway.host, settings.gateway.port) == ("0.0.0.0", 0)
    assert settings.batching.enabled is False
    assert settings.worker.queues == ["vae", "cvae"]
    assert settings.worker.execution_provider == "cpu"
    assert settings.worker.intra_op_threads == 3 and settings.worker.concurrency == 4


def test_flags_not_given_leave_settings_alone() -> None:
    """Without flags build_settings adds no overrides: same values as a plain Settings()."""
    assert settings_from(["models"]) == Settings()


def test_worker_flags_do_not_need_gateway_flags() -> None:
    """The worker command has no gateway flags; its own flags still map to settings."""
    settings = settings_from(
        ["worker", "--broker-url", "redis://b", "--queues", "gan", "--provider", "tensorrt"]
    )
    assert settings.worker.queues == ["gan"] and settings.worker.execution_provider == "tensorrt"
    assert settings.broker_url == "redis://b"


def test_gateway_port_flag_overrides_only_that_knob() -> None:
    """--port changes the port and keeps every other gateway default."""
    settings = build_settings(_parser().parse_args(["gateway", "--port", "6000"]))
    assert settings.gateway.port == 6000
    assert settings.gateway.grace_s == Settings().gateway.grace_s


def test_cli_rejects_an_unknown_provider() -> None:
    """--provider only takes the four supported values."""
    with pytest.raises(SystemExit):
        _parser().parse_args(["worker", "--provider", "rocm"])

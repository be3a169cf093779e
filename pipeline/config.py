"""One YAML file describes the whole deployment: the root config composes each stage's section.

Each stage owns its section (``pipeline.common`` for Kafka and Redis, ``pipeline.ingest.config``,
``pipeline.record.config``, ``detectors.config``, ``detectors.retrain.config``,
``alerts.config``); this module only puts them together and checks what spans sections.
Validation is strict (unknown keys are errors) so a typo never silently falls back to a default;
every error names the offending key path and the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from alerts.config import AlertsConfig, RulesError, parse_alerts_config
from alerts.notify.config import NotifyConfig
from detectors.config import DetectorConfig
from detectors.retrain.config import CollectionConfig, ModelsConfig, ReviewConfig
from pipeline.cameras.spec import CameraSpec
from pipeline.common.config import (
    ConfigError,
    StrictModel,
    expand_env,
    expand_env_values,
    format_validation_error,
)
from pipeline.common.endpoints import service_endpoints
from pipeline.common.kafka import KafkaConfig
from pipeline.common.redis import Component, RedisConfig
from pipeline.console.config import ConsoleConfig
from pipeline.ingest.config import IngestConfig
from pipeline.record.config import RecordingsConfig

__all__ = ["ConfigError", "VigilConfig", "expand_env", "load_config", "parse_config"]


class VigilConfig(StrictModel):
    kafka: KafkaConfig = KafkaConfig()
    redis: RedisConfig = RedisConfig()
    detector: DetectorConfig = DetectorConfig()
    ingest: IngestConfig = IngestConfig()
    collection: CollectionConfig = CollectionConfig()
    review: ReviewConfig = ReviewConfig()
    models: ModelsConfig = ModelsConfig()
    cameras: list[CameraSpec] = []
    alerts: AlertsConfig = AlertsConfig()
    console: ConsoleConfig = ConsoleConfig()
    notify: NotifyConfig = NotifyConfig()
    # a factory: recordings.dir's ${VIGIL_STATE} is expanded when a config is made, not at import
    recordings: RecordingsConfig = Field(default_factory=RecordingsConfig)

    def for_component(self, component: Component) -> VigilConfig:
        """The config one component runs with: the same, but logging in to Redis as that
        component's ACL user (``redis.users.<component>``) when one is configured, so e.g. the
        ingest worker cannot write console users or the model registry's production pointer."""
        redis_cfg = self.redis.for_component(component)
        if redis_cfg is self.redis:
            return self
        return self.model_copy(update={"redis": redis_cfg})

    @field_validator("alerts", mode="before")
    @classmethod
    def _alerts(cls, v: Any) -> AlertsConfig:
        return parse_alerts_config(v)  # a RulesError becomes a ValidationError line here

    @field_validator("cameras")
    @classmethod
    def _unique_ids(cls, cams: list[CameraSpec]) -> list[CameraSpec]:
        seen: set[str] = set()
        for cam in cams:
            if cam.id in seen:
                raise ValueError(f"duplicate camera id {cam.id!r}")
            seen.add(cam.id)
        return cams

    @model_validator(mode="after")
    def _cameras_are_not_services(self) -> VigilConfig:
        forbidden = service_endpoints(self)
        for i, cam in enumerate(self.cameras):
            try:
                cam.check_urls(forbidden=forbidden)
            except ValueError as e:  # names the field: url or record_url
                raise ValueError(f"cameras.{i} ({cam.id}).{e}") from None
        return self


def parse_config(data: Any, source: str = "<config>") -> VigilConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"invalid config {source}: top level must be a mapping, got {type(data).__name__}"
        )
    try:
        # The alerts section first and on its own: its errors name the rule and the key, in the
        # same words wherever rules are checked (YAML, registry, console).
        alerts = parse_alerts_config(data.get("alerts"))
    except RulesError as e:
        raise RulesError(e.errors, source=source) from None
    try:
        return VigilConfig.model_validate({**data, "alerts": alerts})
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None


def load_config(path: str | Path) -> VigilConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:  # quotes the file's text, where secrets are still ${VAR}
        raise ConfigError(f"malformed YAML in {path}: {e}") from None
    try:
        data = expand_env_values(data)
    except ConfigError as e:
        raise ConfigError(f"invalid config {path}: {e}") from None
    return parse_config(data, str(path))

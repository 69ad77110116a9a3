"""Configuration: the schema, loading `params.yaml` with overrides, and path resolution."""

from cybulde.config.loader import ConfigError, load_config
from cybulde.config.schema import Config

__all__ = ["Config", "ConfigError", "load_config"]

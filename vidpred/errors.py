"""The error a user's input gets, shared by every layer (config, data, runs), importing nothing."""


class ConfigError(ValueError):
    """A configuration or input that must not start a run: the message names the key or file and the problem."""

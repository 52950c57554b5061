"""The API's section of the one ``Settings`` object: ``settings.api`` (variables ``HERALD_API__*``)."""
from infra.settings import ApiConfig

__all__ = ["ApiConfig"]

"""The HTTP edge: a litestar app in front of the policy core."""

from service.api.app import create_app

__all__ = ["create_app"]

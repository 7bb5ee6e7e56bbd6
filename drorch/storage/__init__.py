"""Storage drivers: bytes by key."""

from drorch.storage.base import AlreadyExists, ObjectInfo, Storage

__all__ = ["AlreadyExists", "ObjectInfo", "Storage"]

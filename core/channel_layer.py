"""Placeholder: replaced by the database channel layer."""

from channels.layers import InMemoryChannelLayer


class DatabaseChannelLayer(InMemoryChannelLayer):
    pass

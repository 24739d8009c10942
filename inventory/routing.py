"""Websocket routes of the inventory."""

from django.urls import path

from inventory.consumers import ConnectionStatusConsumer

websocket_urlpatterns = [
    path("ws/inventory/connections/", ConnectionStatusConsumer.as_asgi(), name="ws-connection-status"),
]

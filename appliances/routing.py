"""Websocket routes of the appliance fleet."""

from django.urls import path

from appliances.consumers import FleetConsumer

websocket_urlpatterns = [
    path("ws/appliances/", FleetConsumer.as_asgi(), name="ws-appliances"),
]

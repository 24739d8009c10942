from inventory.routing import websocket_urlpatterns as inventory_ws

websocket_urlpatterns = [*inventory_ws]

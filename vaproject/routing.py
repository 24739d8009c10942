from appliances.routing import websocket_urlpatterns as appliances_ws
from inventory.routing import websocket_urlpatterns as inventory_ws
from jobs.routing import websocket_urlpatterns as jobs_ws

websocket_urlpatterns = [*inventory_ws, *appliances_ws, *jobs_ws]

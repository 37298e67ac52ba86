"""The dashboard's websocket (/ws/monitoring/): staff only; forwards every event published to
the dashboard group to the browser as {"event": ..., "payload": ...}."""

import logging

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from monitoring.events import DASHBOARD_GROUP

log = logging.getLogger(__name__)

# Close codes the page tells apart: refused (do not retry at once) and layer trouble (retry).
CLOSE_FORBIDDEN = 4403
CLOSE_LAYER_UNAVAILABLE = 4503


class DashboardConsumer(AsyncJsonWebsocketConsumer):
    joined = False

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_staff:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        try:
            await self.channel_layer.group_add(DASHBOARD_GROUP, self.channel_name)
        except Exception:  # any layer backend's fault: the page falls back to polling
            log.warning("dashboard websocket refused: channel layer unavailable", exc_info=True)
            await self.close(code=CLOSE_LAYER_UNAVAILABLE)
            return
        self.joined = True
        await self.accept()

    async def disconnect(self, code):
        if self.joined:
            self.joined = False
            try:
                await self.channel_layer.group_discard(DASHBOARD_GROUP, self.channel_name)
            except Exception:  # the layer is gone; its group membership expires with it
                log.info("dashboard websocket: group_discard failed", exc_info=True)

    async def receive_json(self, content, **kwargs):
        """A {"type": "ping"} is answered through the channel layer, so the page learns that
        the layer (not just the socket) still carries messages."""
        if isinstance(content, dict) and content.get("type") == "ping":
            try:
                await self.channel_layer.send(self.channel_name, {"type": "layer.pong"})
            except Exception:  # the layer stopped carrying messages: let the page degrade
                log.warning("dashboard websocket: channel layer unavailable", exc_info=True)
                await self.close(code=CLOSE_LAYER_UNAVAILABLE)

    async def dashboard_event(self, message: dict) -> None:
        """Any event published to the dashboard group (monitoring.events), whatever its name."""
        await self.send_json({"event": message["event"], "payload": message.get("payload", {})})

    async def health_check(self, message):
        """The health check's probe message: nothing to tell the browser."""

    async def layer_pong(self, message):
        await self.send_json({"event": "pong", "payload": {}})

from core.audit import Actor, reset_actor, set_actor


def client_address(request) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


class AuditContextMiddleware:
    """Makes the request's user and address the actor of every audit entry it causes."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        path = request.path
        via = "api" if path.startswith("/api/") else "admin" if path.startswith("/admin/") else "portal"
        token = set_actor(Actor(user=_LazyUser(request), remote_addr=client_address(request), via=via))
        try:
            return self.get_response(request)
        finally:
            reset_actor(token)


class _LazyUser:
    """Resolves request.user when first used: DRF token auth sets it after the middleware ran."""

    def __init__(self, request):
        self._request = request

    def _user(self):
        return getattr(self._request, "user", None)

    @property
    def is_authenticated(self) -> bool:
        user = self._user()
        return bool(user and user.is_authenticated)

    def __getattr__(self, name):
        return getattr(self._user(), name)

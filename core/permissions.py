"""DRF permission: safe methods need viewer, actions need operator, changes need administrator."""

from rest_framework.permissions import SAFE_METHODS, BasePermission

from core.rbac import ADMINISTER, OPERATE, VIEW, can


class RolePermission(BasePermission):
    message = "Your role does not allow this."

    def has_permission(self, request, view) -> bool:
        return can(request.user, required_role(request, view))


def required_role(request, view):
    if request.method in SAFE_METHODS:
        return VIEW
    action = getattr(view, "action", None)
    operate_actions = getattr(view, "operator_actions", ())
    if action in operate_actions:
        return OPERATE
    return ADMINISTER

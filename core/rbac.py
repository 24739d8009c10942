"""Roles as Django groups, enforced identically by the portal, the API and websockets.

viewer: read everything. operator: also run operations (sync, later backups and restores).
administrator: also create, change and delete configuration. Superusers are administrators.
"""

from __future__ import annotations

from enum import IntEnum


class Role(IntEnum):
    NONE = 0
    VIEWER = 1
    OPERATOR = 2
    ADMINISTRATOR = 3

    @property
    def label(self) -> str:
        return self.name.lower()


GROUP_ROLES = {"viewer": Role.VIEWER, "operator": Role.OPERATOR, "administrator": Role.ADMINISTRATOR}

# What each kind of action needs.
VIEW, OPERATE, ADMINISTER = Role.VIEWER, Role.OPERATOR, Role.ADMINISTRATOR


def role_of(user) -> Role:
    if user is None or not user.is_authenticated or not user.is_active:
        return Role.NONE
    if user.is_superuser:
        return Role.ADMINISTRATOR
    cached = getattr(user, "_vafleet_role", None)
    if cached is None:
        names = set(user.groups.values_list("name", flat=True))
        cached = max((GROUP_ROLES[n] for n in names if n in GROUP_ROLES), default=Role.NONE)
        user._vafleet_role = cached
    return cached


def can(user, needed: Role) -> bool:
    return role_of(user) >= needed

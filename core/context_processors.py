from core.rbac import ADMINISTER, OPERATE, role_of


def role(request):
    current = role_of(getattr(request, "user", None))
    return {"role": current, "can_operate": current >= OPERATE, "can_administer": current >= ADMINISTER}

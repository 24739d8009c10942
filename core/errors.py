"""Errors whose message is a sentence an operator can act on."""


class ActionableError(Exception):
    """str() is what the user reads; `code` is stable for API clients."""

    code = "error"
    http_status = 502  # most come from a system we talk to (hypervisor, appliance, target)

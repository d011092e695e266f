from __future__ import annotations

from django.http import HttpRequest

from accounts.selectors import organisation_list


def organisations(request: HttpRequest) -> dict[str, object]:
    """The organisation switcher in the top bar: the user's organisations and the active one."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {
        "organisations": lambda: list(organisation_list(user=user)),  # type: ignore[arg-type]
        "active_organisation": getattr(request, "organisation", None),
    }

"""Account pages: sign-up and sign-in, the organisation switcher, organisations and
invitations, API keys, two-factor."""

from __future__ import annotations

import base64
from datetime import timedelta

import django_otp
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import invitations, selectors, services
from accounts import two_factor as totp
from accounts.forms import ApiKeyForm, InvitationForm, SignUpForm, TokenForm
from accounts.models import Invitation, User
from accounts.ratelimit import rate_limit
from accounts.signals import client_ip

NEW_KEY_SESSION_KEY = "new_api_key"
NEW_INVITATION_SESSION_KEY = "new_invitation_link"


def _user(request: HttpRequest) -> User:
    assert isinstance(request.user, User)
    return request.user


@method_decorator(
    rate_limit(group="accounts.login", key="ip", rate="20/m", method="POST"), name="post"
)
class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"
    redirect_authenticated_user = True


@require_http_methods(["GET", "POST"])
@rate_limit(group="accounts.signup", key="ip", rate="10/h", method="POST")
def signup(request: HttpRequest) -> HttpResponse:
    """Create an account with its personal organisation and sign the new user in."""
    if request.user.is_authenticated:
        return redirect("chat:home")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            user = form.save()
            services.organisation_personal_ensure(user=user)
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("chat:home")
    return render(request, "accounts/signup.html", {"form": form})


def _safe_next(request: HttpRequest, fallback: str = "chat:home") -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return reverse(fallback)


@login_required
@require_POST
def organisation_switch(request: HttpRequest) -> HttpResponse:
    """Work in another of your organisations (new chats start there; keys are made there)."""
    try:
        organisation_id = int(request.POST.get("organisation", ""))
    except ValueError:
        organisation_id = 0
    organisation = selectors.organisation_access(
        user=_user(request), organisation_id=organisation_id
    )
    if organisation is None:
        return HttpResponse("No such organisation.", status=404)
    request.session[selectors.ACTIVE_ORGANISATION_SESSION_KEY] = organisation.pk
    return redirect("chat:home")


@login_required
@require_GET
def organisations(request: HttpRequest) -> HttpResponse:
    """Your organisations (leave any but your personal one) and the invitations for you."""
    user = _user(request)
    organisation = request.organisation  # type: ignore[attr-defined]
    return render(
        request,
        "accounts/organisations.html",
        {
            "memberships": selectors.membership_list(user=user),
            "invitations": invitations.invitation_list(user=user),
            "organisation": organisation,
            "may_invite": invitations.invitation_may_invite(user=user, organisation=organisation),
        },
    )


@login_required
@require_POST
def organisation_leave(request: HttpRequest, organisation_id: int) -> HttpResponse:
    user = _user(request)
    organisation = selectors.organisation_access(user=user, organisation_id=organisation_id)
    if organisation is None:
        return HttpResponse("No such organisation.", status=404)
    try:
        invitations.membership_leave(user=user, organisation=organisation, ip=client_ip(request))
    except ValidationError as refused:
        messages.error(request, " ".join(refused.messages))
    else:
        messages.success(request, f"You left {organisation.name}.")
    return redirect("accounts:organisations")


def _invitation_answered(request: HttpRequest, invitation_id: int, *, accept: bool) -> HttpResponse:
    user = _user(request)
    token = request.POST.get("token") or None
    invitation = invitations.invitation_access(
        user=user, invitation_id=None if token else invitation_id, token=token
    )
    if invitation is None or invitation.pk != invitation_id:
        return HttpResponse("No such invitation.", status=404)
    try:
        if accept:
            invitations.invitation_accept(
                invitation=invitation, user=user, token=token, ip=client_ip(request)
            )
            messages.success(request, f"You joined {invitation.organisation.name}.")
        else:
            invitations.invitation_decline(
                invitation=invitation, user=user, token=token, ip=client_ip(request)
            )
            messages.success(request, f"You declined {invitation.organisation.name}.")
    except ValidationError as refused:
        messages.error(request, " ".join(refused.messages))
    return redirect("accounts:organisations")


@login_required
@require_POST
def invitation_accept(request: HttpRequest, invitation_id: int) -> HttpResponse:
    """Join: only the invitee can, signed in (by username, or with the link's token)."""
    return _invitation_answered(request, invitation_id, accept=True)


@login_required
@require_POST
def invitation_decline(request: HttpRequest, invitation_id: int) -> HttpResponse:
    return _invitation_answered(request, invitation_id, accept=False)


@login_required
@require_GET
def invitation_link(request: HttpRequest, token: str) -> HttpResponse:
    """An invitation's link: shown to the account it is addressed to, to accept or decline."""
    invitation = invitations.invitation_access(user=_user(request), token=token)
    if invitation is None:
        return render(request, "accounts/invitation.html", {"invitation": None}, status=404)
    return render(request, "accounts/invitation.html", {"invitation": invitation, "token": token})


@login_required
@require_http_methods(["GET", "POST"])
def organisation_invite(request: HttpRequest) -> HttpResponse:
    """Invite people into the active organisation (its admins only); they accept or decline.
    An email invitation's link is shown once, for the admin to send on."""
    user = _user(request)
    organisation = request.organisation  # type: ignore[attr-defined]
    if not invitations.invitation_may_invite(user=user, organisation=organisation):
        return HttpResponse("Only the organisation's admins invite members.", status=403)
    form = InvitationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            created = invitations.invitation_create(
                organisation=organisation,
                by=user,
                username=form.cleaned_data["username"],
                email=form.cleaned_data["email"],
                role=form.cleaned_data["role"],
                ip=client_ip(request),
            )
        except ValidationError as refused:
            form.add_error(None, refused)
        else:
            request.session[NEW_INVITATION_SESSION_KEY] = request.build_absolute_uri(
                reverse("accounts:invitation_link", args=[created.token])
            )
            return redirect("accounts:organisation_invite")
    return render(
        request,
        "accounts/invite.html",
        {
            "form": form,
            "organisation": organisation,
            "pending": invitations.invitation_pending(organisation=organisation),
            "new_link": request.session.pop(NEW_INVITATION_SESSION_KEY, None),
        },
    )


@login_required
@require_POST
def invitation_revoke(request: HttpRequest, invitation_id: int) -> HttpResponse:
    organisation = request.organisation  # type: ignore[attr-defined]
    invitation: Invitation | None = (
        invitations.invitation_pending(organisation=organisation).filter(pk=invitation_id).first()
    )
    if invitation is None:
        return HttpResponse("No such invitation.", status=404)
    try:
        invitations.invitation_revoke(invitation=invitation, by=_user(request))
    except PermissionDenied:
        return HttpResponse("Only the organisation's admins revoke invitations.", status=403)
    messages.success(request, f"Revoked the invitation of {invitation.invitee}.")
    return redirect("accounts:organisation_invite")


@login_required
@require_http_methods(["GET", "POST"])
def api_keys(request: HttpRequest) -> HttpResponse:
    """Your API keys in the active organisation; a new key's secret is shown once."""
    user = _user(request)
    organisation = request.organisation  # type: ignore[attr-defined]
    form = ApiKeyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        days = form.cleaned_data["expires_in_days"]
        created = services.api_key_create(
            user=user,
            organisation=organisation,
            name=form.cleaned_data["name"],
            expires_at=timezone.now() + timedelta(days=days) if days else None,
            ip=client_ip(request),
        )
        # Shown on the next page view only (then gone from the session): post/redirect/get.
        request.session[NEW_KEY_SESSION_KEY] = created.raw
        return redirect("accounts:keys")
    return render(
        request,
        "accounts/keys.html",
        {
            "form": form,
            "keys": selectors.api_key_list(user=user, organisation=organisation),
            "new_key": request.session.pop(NEW_KEY_SESSION_KEY, None),
            "organisation": organisation,
        },
    )


@login_required
@require_POST
def api_key_revoke(request: HttpRequest, key_id: int) -> HttpResponse:
    key = selectors.api_key_access(user=_user(request), key_id=key_id)
    if key is None:
        return HttpResponse("No such key.", status=404)
    services.api_key_revoke(key=key, by=_user(request), ip=client_ip(request))
    messages.success(request, f"Revoked {key.name}.")
    return redirect("accounts:keys")


@login_required
@require_http_methods(["GET", "POST"])
@rate_limit(group="accounts.2fa", key="user", rate="10/m", method="POST")
def two_factor(request: HttpRequest) -> HttpResponse:
    """Set up an authenticator app, or verify this session with it."""
    user = _user(request)
    enabled = totp.two_factor_enabled(user=user)
    verified = user.is_verified()  # type: ignore[attr-defined]
    required_by_org = totp.two_factor_required_by_organisation(user=user)
    form = TokenForm(request.POST or None)
    if enabled and verified:
        return render(
            request,
            "accounts/two_factor.html",
            {"state": "enabled", "required_by_org": required_by_org},
        )
    if request.method == "POST" and form.is_valid():
        token = form.cleaned_data["token"]
        device = (
            totp.totp_verify(user=user, token=token)
            if enabled
            else totp.totp_confirm(user=user, token=token, ip=client_ip(request))
        )
        if device is not None:
            django_otp.login(request, device)
            return redirect(_safe_next(request))
        form.add_error("token", "That code is not right (or was used already); try the next one.")
    context: dict[str, object] = {
        "form": form,
        "state": "verify" if enabled else "setup",
        "required_by_org": required_by_org,
        "next": request.GET.get("next") or request.POST.get("next", ""),
    }
    if not enabled:
        device = totp.totp_device_pending(user=user)
        context["config_url"] = device.config_url
        context["secret"] = base64.b32encode(device.bin_key).decode()
    return render(request, "accounts/two_factor.html", context)


@login_required
@require_POST
def two_factor_disable(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    if not totp.totp_disable(user=user, ip=client_ip(request)):
        messages.error(request, "An organisation you belong to requires two-factor.")
    return redirect("accounts:two_factor")

"""Membership needs the member's consent: organisation admins invite, the invitee accepts or
declines; nobody but a superuser adds members in the admin; a member leaves (and takes with
them what the organisation could see of them and required of them)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.invitations import invitation_create
from accounts.models import ApiKey, AuditLog, Invitation, Membership, Organisation, User
from accounts.selectors import ACTIVE_ORGANISATION_SESSION_KEY
from accounts.services import account_create, api_key_create, api_key_use
from accounts.tests.test_two_factor import code, sign_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def org_admin(owner):
    """The owner: admin of the team organisation, staff, not a superuser (the issue's case)."""
    owner.is_staff = True
    owner.save(update_fields=["is_staff"])
    return owner


def organisation_form(organisation, rows: list[dict[str, str]], initial: int) -> dict[str, str]:
    """The admin's change form of an organisation, with these membership inline rows."""
    data = {
        "name": organisation.name,
        "slug": organisation.slug,
        "memberships-TOTAL_FORMS": str(len(rows)),
        "memberships-INITIAL_FORMS": str(initial),
        "memberships-MIN_NUM_FORMS": "0",
        "memberships-MAX_NUM_FORMS": "1000",
    }
    for i, row in enumerate(rows):
        for name, value in row.items():
            data[f"memberships-{i}-{name}"] = value
    return data


def existing_rows(organisation) -> list[dict[str, str]]:
    return [
        {
            "id": str(m.pk),
            "organisation": str(organisation.pk),
            "user": str(m.user_id),
            "role": m.role,
        }
        for m in Membership.objects.filter(organisation=organisation).order_by("pk")
    ]


# --- the admin: org admins add nobody ------------------------------------------------------


def test_an_org_admin_cannot_add_any_user_id_as_a_member_in_the_admin(
    client, org_admin, organisation, outsider
):
    AuditLog.objects.create(action="sign_in", actor=outsider, target="oscar", ip="203.0.113.9")
    client.force_login(org_admin)
    rows = existing_rows(organisation)
    forged = {"organisation": str(organisation.pk), "user": str(outsider.pk), "role": "member"}
    url = reverse("admin:accounts_organisation_change", args=[organisation.pk])
    client.post(url, organisation_form(organisation, [*rows, forged], initial=len(rows)))
    assert not Membership.objects.filter(user=outsider, organisation=organisation).exists()
    # So the outsider's page, sign-ins and two-factor stay out of the org admin's reach.
    page = client.get(reverse("admin:accounts_user_change", args=[outsider.pk]), follow=True)
    assert page.redirect_chain[-1][0] == reverse("admin:index")
    audit = client.get(reverse("admin:accounts_auditlog_changelist")).content.decode()
    assert "203.0.113.9" not in audit
    assert 'name="memberships-MAX_NUM_FORMS" value="0"' in client.get(url).content.decode()


def test_an_org_admin_cannot_swap_another_user_into_a_membership(
    client, org_admin, member, organisation, outsider
):
    client.force_login(org_admin)
    rows = existing_rows(organisation)
    for row in rows:
        if row["user"] == str(member.pk):
            row["user"] = str(outsider.pk)
    url = reverse("admin:accounts_organisation_change", args=[organisation.pk])
    client.post(url, organisation_form(organisation, rows, initial=len(rows)))
    assert Membership.objects.filter(user=member, organisation=organisation).exists()
    assert not Membership.objects.filter(user=outsider, organisation=organisation).exists()


def test_an_org_admin_still_changes_roles_and_removes_members(
    client, org_admin, member, organisation
):
    client.force_login(org_admin)
    rows = existing_rows(organisation)
    for row in rows:
        if row["user"] == str(member.pk):
            row["role"] = "operator"
    url = reverse("admin:accounts_organisation_change", args=[organisation.pk])
    response = client.post(url, organisation_form(organisation, rows, initial=len(rows)))
    assert response.status_code == 302
    assert Membership.objects.get(user=member, organisation=organisation).role == "operator"
    for row in rows:
        if row["user"] == str(member.pk):
            row["DELETE"] = "on"
    client.post(url, organisation_form(organisation, rows, initial=len(rows)))
    assert not Membership.objects.filter(user=member, organisation=organisation).exists()


def test_an_org_admin_cannot_make_their_organisation_someones_personal_one(
    client, org_admin, organisation
):
    # A user made without a personal organisation (as the admin can), and a member here.
    lone = User.objects.create_user(username="lone", password="x")
    Membership.objects.create(user=lone, organisation=organisation)
    client.force_login(org_admin)
    rows = existing_rows(organisation)
    data = organisation_form(organisation, rows, initial=len(rows))
    client.post(
        reverse("admin:accounts_organisation_change", args=[organisation.pk]),
        {**data, "personal_owner": str(lone.pk)},
    )
    organisation.refresh_from_db()
    assert organisation.personal_owner_id is None  # lone's chats would have started here


def test_a_superuser_still_adds_members_in_the_admin(admin_client, organisation, outsider):
    rows = existing_rows(organisation)
    added = {"organisation": str(organisation.pk), "user": str(outsider.pk), "role": "member"}
    response = admin_client.post(
        reverse("admin:accounts_organisation_change", args=[organisation.pk]),
        {
            **organisation_form(organisation, [*rows, added], initial=len(rows)),
            "personal_owner": "",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Membership.objects.filter(user=outsider, organisation=organisation).exists()


# --- invitations -----------------------------------------------------------------------------


def invite(client, **fields) -> str:
    response = client.post(reverse("accounts:organisation_invite"), {"role": "member", **fields})
    assert response.status_code == 302, response.content.decode()[:2000]
    page = client.get(reverse("accounts:organisation_invite")).content.decode()
    link = re.search(r"/accounts/invitations/join/([\w-]+)", page)
    assert link is not None, "the new invitation's link is shown once"
    return link.group(1)


@pytest.fixture
def admin_session(client, owner, organisation):
    """The owner signed in, working in the team organisation they administer."""
    client.force_login(owner)
    session = client.session
    session[ACTIVE_ORGANISATION_SESSION_KEY] = organisation.pk
    session.save()
    return client


def test_an_invitation_makes_nobody_a_member_until_they_accept(
    admin_session, client, owner, organisation, outsider
):
    invite(admin_session, username="oscar", role="operator")
    invitation = Invitation.objects.get(username="oscar")
    assert invitation.invited_by == owner and invitation.state == "pending"
    assert not Membership.objects.filter(user=outsider, organisation=organisation).exists()

    client.force_login(outsider)
    page = client.get(reverse("accounts:organisations")).content.decode()
    assert "Acme" in page and "operator" in page
    client.post(reverse("accounts:invitation_accept", args=[invitation.pk]))
    assert Membership.objects.get(user=outsider, organisation=organisation).role == "operator"
    invitation.refresh_from_db()
    assert invitation.state == "accepted" and invitation.accepted_by == outsider
    actions = set(
        AuditLog.objects.filter(organisation=organisation).values_list("action", flat=True)
    )
    assert {"invitation_sent", "invitation_accepted", "role_changed"} <= actions
    # Answered once: accepting again finds nothing.
    again = client.post(reverse("accounts:invitation_accept", args=[invitation.pk]))
    assert again.status_code == 404


def test_only_the_invitee_can_accept_or_see_an_invitation(
    admin_session, client, organisation, outsider
):
    invite(admin_session, username="oscar")
    invitation = Invitation.objects.get(username="oscar")
    eve = account_create(username="eve", password="x")
    client.force_login(eve)
    assert "No invitations." in client.get(reverse("accounts:organisations")).content.decode()
    response = client.post(reverse("accounts:invitation_accept", args=[invitation.pk]))
    assert response.status_code == 404
    assert not Membership.objects.filter(user=eve, organisation=organisation).exists()
    assert Invitation.objects.get(pk=invitation.pk).state == "pending"


def test_a_declined_or_expired_invitation_cannot_be_accepted(
    admin_session, client, organisation, outsider
):
    invite(admin_session, username="oscar")
    declined = Invitation.objects.get(username="oscar")
    client.force_login(outsider)
    client.post(reverse("accounts:invitation_decline", args=[declined.pk]))
    assert Invitation.objects.get(pk=declined.pk).state == "declined"
    assert client.post(reverse("accounts:invitation_accept", args=[declined.pk])).status_code == 404

    expired = invitation_create(
        organisation=organisation, by=organisation.memberships.first().user, username="oscar"
    )
    Invitation.objects.filter(pk=expired.invitation.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    response = client.post(reverse("accounts:invitation_accept", args=[expired.invitation.pk]))
    assert response.status_code == 404
    assert not Membership.objects.filter(user=outsider, organisation=organisation).exists()


def test_an_email_invitation_needs_its_link_and_the_address(
    admin_session, client, organisation, outsider, member
):
    outsider.email = "Oscar@Example.com"
    outsider.save(update_fields=["email"])
    token = invite(admin_session, email="oscar@example.com")
    invitation = Invitation.objects.get(email="oscar@example.com")
    assert invitation.token_hash != token and token not in str(invitation.__dict__)

    # Someone else holding the link, and the addressee without it, get nothing.
    client.force_login(member)
    assert client.get(reverse("accounts:invitation_link", args=[token])).status_code == 404
    client.force_login(outsider)
    assert "Acme" not in client.get(reverse("accounts:organisations")).content.decode()
    assert (
        client.post(reverse("accounts:invitation_accept", args=[invitation.pk])).status_code == 404
    )

    page = client.get(reverse("accounts:invitation_link", args=[token])).content.decode()
    assert "Acme" in page and token in page
    client.post(reverse("accounts:invitation_accept", args=[invitation.pk]), {"token": token})
    assert Membership.objects.filter(user=outsider, organisation=organisation).exists()


def test_only_admins_invite_and_personal_organisations_take_nobody(
    client, owner, member, organisation, outsider
):
    client.force_login(member)
    session = client.session
    session[ACTIVE_ORGANISATION_SESSION_KEY] = organisation.pk  # a plain member there
    session.save()
    assert client.get(reverse("accounts:organisation_invite")).status_code == 403
    assert (
        client.post(
            reverse("accounts:organisation_invite"), {"username": "oscar", "role": "admin"}
        ).status_code
        == 403
    )
    client.force_login(owner)  # active: the owner's personal organisation
    assert client.get(reverse("accounts:organisation_invite")).status_code == 403
    assert not Invitation.objects.exists()


def test_org_admins_invite_in_the_admin_and_see_the_link_once(
    client, org_admin, organisation, owner
):
    client.force_login(org_admin)
    personal = Organisation.objects.get(personal_owner=owner)
    add = reverse("admin:accounts_invitation_add")
    refused = client.post(add, {"organisation": personal.pk, "username": "oscar", "role": "member"})
    assert refused.status_code == 200 and not Invitation.objects.exists()
    response = client.post(
        add,
        {"organisation": organisation.pk, "email": "new@example.com", "role": "member"},
        follow=True,
    )
    text = " ".join(str(m) for m in get_messages(response.wsgi_request))
    assert "Invited new@example.com" in text and "/accounts/invitations/join/" in text
    invitation = Invitation.objects.get(email="new@example.com")
    assert invitation.invited_by == org_admin and invitation.organisation == organisation
    assert not Membership.objects.filter(organisation=organisation, user__email="new@example.com")


def test_an_operator_cannot_invite_in_the_admin(client, owner, member, organisation):
    Membership.objects.filter(user=member, organisation=organisation).update(role="operator")
    member.is_staff = True
    member.save(update_fields=["is_staff"])
    client.force_login(member)
    response = client.post(
        reverse("admin:accounts_invitation_add"),
        {"organisation": organisation.pk, "username": "oscar", "role": "admin"},
    )
    assert response.status_code == 403 and not Invitation.objects.exists()


# --- what an organisation sees of its members ----------------------------------------------


def test_operators_see_a_members_sign_ins_only_from_when_they_joined(
    admin_session, client, org_admin, organisation, outsider
):
    before = AuditLog.objects.create(action="sign_in", actor=outsider, ip="198.51.100.1")
    AuditLog.objects.filter(pk=before.pk).update(created_at=timezone.now() - timedelta(days=3))
    invite(admin_session, username="oscar")
    client.force_login(outsider)
    client.post(
        reverse("accounts:invitation_accept", args=[Invitation.objects.get(username="oscar").pk])
    )
    AuditLog.objects.create(action="sign_in", actor=outsider, ip="198.51.100.2")
    client.force_login(org_admin)
    audit = client.get(reverse("admin:accounts_auditlog_changelist")).content.decode()
    assert "198.51.100.2" in audit and "198.51.100.1" not in audit


# --- leaving ---------------------------------------------------------------------------------


def test_a_member_leaves_and_their_keys_there_die(client, member, organisation):
    key = api_key_create(user=member, organisation=organisation, name="bot")
    client.force_login(member)
    client.post(reverse("accounts:organisation_leave", args=[organisation.pk]))
    assert not Membership.objects.filter(user=member, organisation=organisation).exists()
    assert api_key_use(raw=key.raw) is None
    assert ApiKey.objects.get(pk=key.key.pk).revoked_at is not None
    assert AuditLog.objects.filter(action="membership_left", actor=member).exists()


def test_nobody_leaves_their_personal_organisation(client, member):
    personal = Organisation.objects.get(personal_owner=member)
    client.force_login(member)
    client.post(reverse("accounts:organisation_leave", args=[personal.pk]))
    assert Membership.objects.filter(user=member, organisation=personal).exists()


def test_two_factor_required_by_an_organisation_can_be_turned_off_after_leaving_it(
    client, member, organisation
):
    organisation.require_2fa = True
    organisation.save()
    device = TOTPDevice.objects.create(user=member, name="app", confirmed=True)
    sign_in(client, "marek")
    client.post(reverse("accounts:two_factor"), {"token": code(device)})
    client.post(reverse("accounts:two_factor_disable"))
    assert TOTPDevice.objects.filter(user=member).exists()  # required while a member
    client.post(reverse("accounts:organisation_leave", args=[organisation.pk]))
    client.post(reverse("accounts:two_factor_disable"))
    assert not TOTPDevice.objects.filter(user=member).exists()
    assert AuditLog.objects.filter(action="2fa_disabled", actor=member).exists()

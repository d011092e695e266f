"""Operators in the admin: a non-superuser operator sees only their organisation's rows; keys
are revocable but never shown; the audit log is read-only for everyone."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.urls import reverse

from accounts.models import ApiKey, AuditLog, Budget, Membership, UsageCounter, UsageLedger, User
from accounts.services import api_key_create, api_key_use, membership_set
from chat import services
from chat.models import Conversation, Message

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(owner, member, organisation, outsider, other_organisation, no_dispatch):
    """Two organisations with a chat, a key, a budget and usage each; an operator of the first."""
    ours = services.message_send(
        author=owner,
        conversation=None,
        text="ours: launch plan",
        client_id="a",
        organisation=organisation,
    )
    theirs = services.message_send(
        author=outsider,
        conversation=None,
        text="theirs: merger",
        client_id="b",
        organisation=other_organisation,
    )
    our_key = api_key_create(user=owner, organisation=organisation, name="our-bot")
    their_key = api_key_create(user=outsider, organisation=other_organisation, name="their-bot")
    Budget.objects.create(organisation=organisation, period="day", max_tokens=10_000)
    Budget.objects.create(organisation=other_organisation, period="day", max_tokens=20_000)
    operator = User.objects.create_user(username="opal", password="operator pass 1", is_staff=True)
    membership_set(organisation=organisation, user=operator, role="operator", by=owner)
    return {
        "ours": ours,
        "theirs": theirs,
        "our_key": our_key,
        "their_key": their_key,
        "operator": operator,
    }


def changelist(client, model: str, **params) -> str:
    response = client.get(reverse(f"admin:{model}_changelist"), params)
    assert response.status_code == 200, model
    return response.content.decode()


def test_an_operator_sees_only_their_organisations_rows(client, world, organisation):
    client.force_login(world["operator"])
    conversations = changelist(client, "chat_conversation")
    assert "ours: launch plan" in conversations and "theirs: merger" not in conversations
    messages = changelist(client, "chat_message", q="merger")
    assert "0 messages" in messages
    keys = changelist(client, "accounts_apikey")
    assert "our-bot" in keys and "their-bot" not in keys
    budgets = changelist(client, "accounts_budget")
    assert "10000" in budgets and "20000" not in budgets
    organisations = changelist(client, "accounts_organisation")
    assert "Acme" in organisations and "oscar" not in organisations
    users = changelist(client, "accounts_user")
    assert "olivia" in users and "marek" in users and "oscar" not in users
    ledger_ids = {e.pk for e in UsageLedger.objects.filter(organisation=organisation)}
    ledger = changelist(client, "accounts_usageledger")
    assert f"{len(ledger_ids)} usage ledger entr" in ledger
    usage = changelist(client, "accounts_usagecounter")
    assert "oscar" not in usage and "Acme" in usage


def test_an_operator_cannot_open_another_organisations_rows(client, world):
    client.force_login(world["operator"])
    theirs = world["theirs"]
    for url in (
        reverse("admin:chat_conversation_change", args=[theirs.reply.conversation_id]),
        reverse("admin:chat_message_change", args=[theirs.user_message.pk]),
        reverse("admin:accounts_apikey_change", args=[world["their_key"].key.pk]),
        reverse("admin:accounts_user_change", args=[User.objects.get(username="oscar").pk]),
    ):
        response = client.get(url, follow=True)
        assert b"merger" not in response.content and b"their-bot" not in response.content
        assert response.redirect_chain and response.redirect_chain[-1][0] == reverse("admin:index")


def test_an_operator_reads_conversations_but_cannot_change_them(client, world):
    client.force_login(world["operator"])
    conversation_id = world["ours"].reply.conversation_id
    url = reverse("admin:chat_conversation_change", args=[conversation_id])
    page = client.get(url).content.decode()
    assert "ours: launch plan" in page and 'name="_save"' not in page
    assert client.post(url, {"title": "hijacked"}).status_code == 403
    assert Conversation.objects.get(pk=conversation_id).title != "hijacked"


def test_staff_without_an_operator_role_sees_nothing(client, world):
    loner = User.objects.create_user(username="lonely", password="x", is_staff=True)
    client.force_login(loner)
    assert client.get(reverse("admin:chat_conversation_changelist")).status_code == 403
    assert client.get(reverse("admin:accounts_auditlog_changelist")).status_code == 403


def test_a_plain_member_with_staff_flag_sees_only_their_personal_organisation(
    client, world, member
):
    member.is_staff = True
    member.save()
    client.force_login(member)
    keys = changelist(client, "accounts_apikey")
    assert "our-bot" not in keys and "their-bot" not in keys
    assert "launch plan" not in changelist(client, "chat_conversation")


def test_an_operator_revokes_keys_of_their_organisation_only(client, world):
    client.force_login(world["operator"])
    response = client.post(
        reverse("admin:accounts_apikey_changelist"),
        {
            "action": "revoke",
            "_selected_action": [world["our_key"].key.pk, world["their_key"].key.pk],
        },
    )
    assert response.status_code == 302
    assert api_key_use(raw=world["our_key"].raw) is None
    assert api_key_use(raw=world["their_key"].raw) is not None
    entry = AuditLog.objects.get(action="key_revoked")
    assert entry.actor == world["operator"] and "our-bot" in entry.target


def test_the_admin_never_shows_a_keys_secret_or_hash(client, world, admin_client):
    key = ApiKey.objects.get(name="our-bot")
    secret = world["our_key"].raw.split("_", 2)[2]
    page = admin_client.get(reverse("admin:accounts_apikey_change", args=[key.pk])).content.decode()
    assert f"pk_{key.prefix}_" in page
    assert secret not in page and key.secret_hash not in page
    assert admin_client.get(reverse("admin:accounts_apikey_add")).status_code == 403


def test_the_audit_log_is_readable_but_not_editable_or_deletable(client, world, admin_client):
    entry = AuditLog.objects.filter(organisation__name="Acme").first()
    assert entry is not None
    client.force_login(world["operator"])
    url = reverse("admin:accounts_auditlog_change", args=[entry.pk])
    assert client.get(url).status_code == 200
    assert client.post(url, {"action": "sign_in", "target": "forged"}).status_code == 403
    delete = reverse("admin:accounts_auditlog_delete", args=[entry.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403  # superusers too
    assert AuditLog.objects.filter(pk=entry.pk).exists()


def test_operators_see_audit_entries_of_their_organisation_and_members_only(client, world):
    client.force_login(world["operator"])
    page = changelist(client, "accounts_auditlog")
    assert "our-bot" in page and "their-bot" not in page


def test_sign_ins_and_failed_sign_ins_are_audited(client, owner):
    client.post(reverse("accounts:login"), {"username": "olivia", "password": "wrong"})
    client.post(
        reverse("accounts:login"), {"username": "olivia", "password": "correct horse battery"}
    )
    failed = AuditLog.objects.get(action="sign_in_failed")
    assert failed.actor == owner and failed.ip == "127.0.0.1"
    assert "wrong" not in str(failed.details)
    assert AuditLog.objects.filter(action="sign_in", actor=owner).exists()


def test_an_org_admin_changes_roles_and_it_is_audited(client, world, owner, member, organisation):
    owner.is_staff = True
    owner.save()
    client.force_login(owner)
    memberships = list(Membership.objects.filter(organisation=organisation).order_by("pk"))
    data = {
        "name": organisation.name,
        "slug": organisation.slug,
        "personal_owner": "",
        "memberships-TOTAL_FORMS": str(len(memberships)),
        "memberships-INITIAL_FORMS": str(len(memberships)),
        "memberships-MIN_NUM_FORMS": "0",
        "memberships-MAX_NUM_FORMS": "1000",
    }
    for i, m in enumerate(memberships):
        data[f"memberships-{i}-id"] = str(m.pk)
        data[f"memberships-{i}-organisation"] = str(organisation.pk)
        data[f"memberships-{i}-user"] = str(m.user_id)
        data[f"memberships-{i}-role"] = "operator" if m.user_id == member.pk else m.role
    response = client.post(
        reverse("admin:accounts_organisation_change", args=[organisation.pk]), data
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    assert Membership.objects.get(user=member, organisation=organisation).role == "operator"
    entry = AuditLog.objects.filter(action="role_changed", target="marek").latest("id")
    assert entry.actor == owner and entry.details == {"from": "member", "to": "operator"}
    assert AuditLog.objects.filter(action="admin_edit", actor=owner).exists()


def test_an_operator_cannot_change_roles_or_organisation_settings(client, world, organisation):
    client.force_login(world["operator"])
    url = reverse("admin:accounts_organisation_change", args=[organisation.pk])
    assert client.get(url).status_code == 200  # read-only view
    assert client.post(url, {"name": "Renamed", "require_2fa": "on"}).status_code == 403


def test_admin_edits_are_audited_with_the_actor(world, owner):
    LogEntry.objects.log_actions(
        user_id=owner.pk,
        queryset=Conversation.objects.all()[:1],
        action_flag=CHANGE,
        change_message="Changed title.",
    )
    entry = AuditLog.objects.get(action="admin_edit")
    assert entry.actor == owner and entry.target.startswith("chat.conversation #")
    assert ContentType.objects.get_for_model(Conversation)


def test_usage_per_user_and_organisation_per_day_is_read_only(client, world, organisation):
    client.force_login(world["operator"])
    counter = UsageCounter.objects.filter(organisation=organisation).first()
    url = reverse("admin:accounts_usagecounter_change", args=[counter.pk])
    assert client.get(url).status_code == 200
    assert client.post(url, {"tokens": 0}).status_code == 403
    assert Message.objects.count() == 4


def test_deleting_several_rows_at_once_is_audited_row_by_row(admin_client, world, organisation):
    Budget.objects.create(organisation=organisation, user=world["operator"], period="month")
    ids = list(Budget.objects.filter(organisation=organisation).values_list("pk", flat=True))
    assert len(ids) == 2
    response = admin_client.post(
        reverse("admin:accounts_budget_changelist"),
        {"action": "delete_selected", "_selected_action": ids, "post": "yes"},
    )
    assert response.status_code == 302 and not Budget.objects.filter(pk__in=ids).exists()
    deleted = AuditLog.objects.filter(action="admin_edit", details__flag="deleted")
    assert deleted.count() == 2

"""Who may do what, and how much: users, organisations (tenants), roles, API keys, budgets,
the usage ledger and the audit log."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models import Q
from django.utils import timezone


class User(AbstractUser):
    """Parley's own user model, swappable from the first migration on."""


class Organisation(models.Model):
    """A tenant: conversations, keys, budgets and usage belong to exactly one."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80, unique=True)
    # Set for the personal organisation every user gets at sign-up (where their chats start).
    personal_owner = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="personal_organisation",
    )
    require_2fa = models.BooleanField(
        "require two-factor authentication",
        default=False,
        help_text="Members must set up and use an authenticator app before using chat.",
    )
    # Tenant features: the model aliases members may use (empty: every model). Plain data that
    # llm/catalog.py applies (accounts knows nothing of models): accounts/features.py.
    allowed_models = models.JSONField(
        "allowed models",
        default=list,
        blank=True,
        help_text="The model aliases this organisation may use; none ticked: every model.",
    )
    documents_enabled = models.BooleanField(
        "documents",
        default=True,
        help_text="Members may upload documents and chat with them (docs/documents.md).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def personal(self) -> bool:
        return self.personal_owner_id is not None


class Membership(models.Model):
    class Role(models.TextChoices):
        MEMBER = "member"
        OPERATOR = "operator"  # reads usage and conversations in the admin, sets budgets
        ADMIN = "admin"  # and manages members, roles and organisation settings

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    organisation = models.ForeignKey(
        Organisation, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["organisation", "user"]
        constraints = [
            models.UniqueConstraint(fields=["user", "organisation"], name="unique_membership")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.organisation} ({self.role})"


class Invitation(models.Model):
    """An offer to join an organisation, made by one of its admins: membership needs the
    invitee's consent (accounts/invitations.py).

    Addressed to a username (the invitee sees it on their invitations page) or to an email
    address (accepted only through its link, whose token proves the link reached them: Parley
    does not verify addresses). Only a hash of the token is stored.
    """

    organisation = models.ForeignKey(
        Organisation, on_delete=models.CASCADE, related_name="invitations"
    )
    username = models.CharField(max_length=150, blank=True, default="")
    email = models.EmailField(blank=True, default="")
    role = models.CharField(
        max_length=16, choices=Membership.Role.choices, default=Membership.Role.MEMBER
    )
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        on_delete=models.SET_NULL,
        related_name="invitations_sent",
    )
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    declined_at = models.DateTimeField(null=True, blank=True)
    # Who accepted it (for an email invitation, the account that used the link).
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="invitations_accepted",
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(username="") | ~Q(email=""), name="invitation_has_an_invitee"
            )
        ]

    def __str__(self) -> str:
        return f"{self.invitee} to {self.organisation} ({self.role})"

    @property
    def invitee(self) -> str:
        return self.username or self.email

    @property
    def state(self) -> str:
        if self.accepted_at is not None:
            return "accepted"
        if self.declined_at is not None:
            return "declined"
        return "expired" if self.expires_at <= timezone.now() else "pending"


class ApiKey(models.Model):
    """A key a program sends as `Authorization: Bearer pk_<prefix>_<secret>`.

    Only the public prefix and a SHA-256 of the whole key are stored: the secret is shown once
    at creation and cannot be recovered from the database.
    """

    organisation = models.ForeignKey(
        Organisation, on_delete=models.CASCADE, related_name="api_keys"
    )
    # The key acts as this user, within `organisation` only, while they are a member of it.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} (pk_{self.prefix}_…)"

    @property
    def is_active(self) -> bool:
        now = timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


class Period(models.TextChoices):
    DAY = "day"
    MONTH = "month"


class Budget(models.Model):
    """A cap on tokens and/or cost per day or month, for a whole organisation or one member."""

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="budgets")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="budgets",
        help_text="Empty: the budget of the whole organisation.",
    )
    period = models.CharField(max_length=8, choices=Period.choices)
    max_tokens = models.PositiveBigIntegerField(null=True, blank=True)
    max_cost = models.DecimalField(max_digits=20, decimal_places=8, null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["organisation", "user", "period"]
        constraints = [
            models.UniqueConstraint(
                fields=["organisation", "user", "period"],
                condition=Q(user__isnull=False),
                name="unique_user_budget",
            ),
            models.UniqueConstraint(
                fields=["organisation", "period"],
                condition=Q(user__isnull=True),
                name="unique_organisation_budget",
            ),
        ]

    def __str__(self) -> str:
        who = self.user or "everyone"
        return f"{self.organisation} / {who} / per {self.period}"


class UsageCounter(models.Model):
    """What is charged (reserved + used) in one period, per member and per organisation.

    Derived from the ledger in the same transactions that write it; the row locks here make
    reservations atomic across processes. Day rows are also the usage report in the admin.
    """

    organisation = models.ForeignKey(
        Organisation, on_delete=models.CASCADE, related_name="usage_counters"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="usage_counters",
    )
    period = models.CharField(max_length=8, choices=Period.choices)
    start = models.DateField()
    tokens = models.BigIntegerField(default=0)
    cost = models.DecimalField(max_digits=20, decimal_places=8, default=0)
    requests = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-start", "organisation", "user"]
        constraints = [
            models.UniqueConstraint(
                fields=["organisation", "user", "period", "start"],
                condition=Q(user__isnull=False),
                name="unique_user_counter",
            ),
            models.UniqueConstraint(
                fields=["organisation", "period", "start"],
                condition=Q(user__isnull=True),
                name="unique_organisation_counter",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.organisation} / {self.user or 'all'} / {self.period} {self.start}"


class UsageLedger(models.Model):
    """The record of each reply's spend: its worst case reserved before the provider call,
    then settled to what it really used (or released if it never ran)."""

    class State(models.TextChoices):
        RESERVED = "reserved"
        SETTLED = "settled"
        RELEASED = "released"

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="usage")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="usage"
    )
    message = models.OneToOneField(
        "chat.Message",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="usage",
    )
    reserved_prompt_tokens = models.PositiveIntegerField(default=0)
    reserved_tokens = models.PositiveIntegerField(default=0)
    reserved_cost = models.DecimalField(max_digits=20, decimal_places=8, default=0)
    used_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=20, decimal_places=8, default=0)
    state = models.CharField(
        max_length=16, choices=State.choices, default=State.RESERVED, db_index=True
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    settled_at = models.DateTimeField(null=True, blank=True)
    # What the reply was, copied here when it settles: the ledger outlives its message (a
    # deleted conversation takes its messages, not its spend), and every usage figure (report,
    # dashboard, export) reads the ledger alone. used_tokens = prompt_tokens + completion_tokens.
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    tokens_estimated = models.BooleanField(default=False)
    provider = models.CharField(max_length=64, blank=True, default="")
    model = models.CharField(max_length=128, blank=True, default="")
    outcome = models.CharField(
        max_length=16, blank=True, default="", help_text="The reply's final status."
    )
    error_code = models.CharField(max_length=64, blank=True, default="")
    first_token_ms = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "usage ledger entry"
        verbose_name_plural = "usage ledger"
        indexes = [models.Index(fields=["organisation", "created_at"])]

    def __str__(self) -> str:
        return f"#{self.pk} {self.state} {self.charged_tokens} tokens"

    @property
    def charged_tokens(self) -> int:
        return self.reserved_tokens if self.state == self.State.RESERVED else self.used_tokens


class AuditLog(models.Model):
    """Security-relevant actions, for operators to read; nobody edits them."""

    class Action(models.TextChoices):
        SIGN_IN = "sign_in"
        SIGN_IN_FAILED = "sign_in_failed"
        SIGN_OUT = "sign_out"
        KEY_CREATED = "key_created"
        KEY_REVOKED = "key_revoked"
        ROLE_CHANGED = "role_changed"
        BUDGET_CHANGED = "budget_changed"
        TWO_FACTOR_ENABLED = "2fa_enabled"
        TWO_FACTOR_DISABLED = "2fa_disabled"
        ADMIN_EDIT = "admin_edit"
        INVITATION_SENT = "invitation_sent"
        INVITATION_ACCEPTED = "invitation_accepted"
        INVITATION_DECLINED = "invitation_declined"
        MEMBERSHIP_LEFT = "membership_left"

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="audit_entries",
    )
    organisation = models.ForeignKey(
        Organisation,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="audit_entries",
    )
    action = models.CharField(max_length=32, choices=Action.choices, db_index=True)
    target = models.CharField(max_length=255, blank=True, default="")
    ip = models.GenericIPAddressField(null=True, blank=True)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "audit log entry"
        verbose_name_plural = "audit log"

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.action} {self.target}"

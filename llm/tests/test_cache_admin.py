"""Operators see hit rate, savings and entries in the admin, and purge: an entry, an
organisation, everything; and the cache_warm / cache_purge commands."""

from __future__ import annotations

import re
from datetime import date, timedelta
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.management import CommandError, call_command
from django.urls import reverse

from accounts.models import Membership, Organisation, User
from accounts.services import membership_set
from llm.cache.entries import entry_store
from llm.cache.exact import exact_get
from llm.cache.keys import CacheRequest, Params
from llm.cache.policy import policy_for
from llm.cache.semantic import indexes_forget
from llm.cache_models import CacheEntry, CachePolicy, CacheStat
from llm.tests.cache_support import ask

PARAMS = Params(temperatures=(0.0,), max_tokens=512, deployments=("simulated/simulated",))


def stored(question: str, organisation) -> CacheRequest:
    request = CacheRequest(
        namespace=f"org:{organisation.pk}",
        organisation_id=organisation.pk,
        alias="default",
        params=PARAMS,
        system="",
        history=(),
        question=question,
    )
    entry_store(request, answer=f"answer to {question}", ttl=600, max_entries=100)
    return request


@pytest.fixture
def superuser_client(client, db):
    client.force_login(User.objects.create_superuser(username="root", password="pw pw pw pw"))
    return client


@pytest.fixture
def operator_client(client, owner, organisation, member):
    """The member, made staff and an operator of the team organisation only."""
    membership_set(organisation=organisation, user=member, role=Membership.Role.OPERATOR, by=owner)
    member.is_staff = True
    member.save(update_fields=["is_staff"])
    client.force_login(member)
    return client


CHANGELIST = "admin:llm_cacheentry_changelist"


@pytest.mark.django_db
def test_the_entry_list_shows_hit_rate_savings_and_entries(
    superuser_client, organisation, other_organisation
):
    stored("What is a mutex?", organisation)
    stored("What is a semaphore?", other_organisation)
    CacheStat.objects.create(
        namespace=f"org:{organisation.pk}",
        organisation=organisation,
        day=date.today(),
        lookups=8,
        exact_hits=2,
        semantic_hits=1,
        saved_cost=Decimal("0.25"),
    )
    page = superuser_client.get(reverse(CHANGELIST)).content.decode()
    assert "What is a mutex?" in page and "What is a semaphore?" in page
    assert '<td class="cache-hit-rate">38%</td>' in page
    assert "0.25" in page and reverse("admin:llm_cacheentry_purge_all") in page
    stats = superuser_client.get(reverse("admin:llm_cachestat_changelist")).content.decode()
    assert "38%" in stats
    entry = CacheEntry.objects.get(question="What is a mutex?")
    detail = superuser_client.get(reverse("admin:llm_cacheentry_change", args=[entry.pk]))
    assert detail.status_code == 200 and "answer to What is a mutex?" in detail.content.decode()
    for name in ("cachehit", "cachepolicy"):
        assert superuser_client.get(reverse(f"admin:llm_{name}_changelist")).status_code == 200


@pytest.mark.django_db
def test_deleting_entries_in_the_admin_removes_their_keys(superuser_client, organisation):
    gone, kept = stored("a", organisation), stored("b", organisation)
    entry = CacheEntry.objects.get(key=gone.key)
    response = superuser_client.post(
        reverse(CHANGELIST),
        {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"},
    )
    assert response.status_code == 302
    assert exact_get(gone.namespace, gone.key) is None
    assert exact_get(kept.namespace, kept.key) is not None


@pytest.mark.django_db
def test_purging_everything_needs_a_superuser_and_a_confirmation(
    superuser_client, organisation, other_organisation
):
    a, b = stored("a", organisation), stored("b", other_organisation)
    url = reverse("admin:llm_cacheentry_purge_all")
    assert "all 2 entries" in superuser_client.get(url).content.decode()
    assert CacheEntry.objects.count() == 2, "a GET asks, it does not purge"
    assert superuser_client.post(url).status_code == 302
    assert not CacheEntry.objects.exists()
    assert exact_get(a.namespace, a.key) is None and exact_get(b.namespace, b.key) is None


@pytest.mark.django_db
def test_an_operator_sees_and_purges_only_their_organisations_entries(
    operator_client, organisation, other_organisation
):
    mine, theirs = stored("mine", organisation), stored("theirs", other_organisation)
    page = operator_client.get(reverse(CHANGELIST)).content.decode()
    assert "mine" in page and "theirs" not in page
    assert reverse("admin:llm_cacheentry_purge_all") not in page
    assert operator_client.get(reverse("admin:llm_cacheentry_purge_all")).status_code == 403
    entry = CacheEntry.objects.get(key=mine.key, namespace=mine.namespace)
    operator_client.post(
        reverse(CHANGELIST), {"action": "purge_organisations", "_selected_action": [entry.pk]}
    )
    assert exact_get(mine.namespace, mine.key) is None
    assert exact_get(theirs.namespace, theirs.key) is not None
    other = CacheEntry.objects.get(namespace=theirs.namespace)
    operator_client.post(
        reverse(CHANGELIST),
        {"action": "delete_selected", "_selected_action": [other.pk], "post": "yes"},
    )
    assert CacheEntry.objects.filter(pk=other.pk).exists(), "not theirs to delete"


CACHE_LISTS = [CHANGELIST, "admin:llm_cachestat_changelist", "admin:llm_cachehit_changelist"]


def organisation_choices(page: str) -> set[int]:
    return {int(pk) for pk in re.findall(r"organisation__id__exact=(\d+)", page)}


@pytest.mark.django_db
def test_an_operators_organisation_filters_offer_only_their_organisations(
    operator_client, organisation, member, other_organisation
):
    stored("mine", organisation)
    stored("theirs", other_organisation)
    theirs = {member.personal_organisation.pk, organisation.pk}
    for url in CACHE_LISTS:
        page = operator_client.get(reverse(url)).content.decode()
        assert organisation_choices(page) == theirs, url
        assert "oscar" not in page  # the other organisation is named after its owner


@pytest.mark.django_db
def test_a_superusers_organisation_filters_offer_every_organisation(
    superuser_client, organisation, other_organisation
):
    everyone = set(Organisation.objects.values_list("pk", flat=True))
    assert len(everyone) >= 3
    for url in CACHE_LISTS:
        page = superuser_client.get(reverse(url)).content.decode()
        assert organisation_choices(page) == everyone, url


@pytest.mark.django_db
def test_the_policy_list_purges_an_organisations_cache(superuser_client, organisation):
    request = stored("a", organisation)
    policy = CachePolicy.objects.create(organisation=organisation, semantic_threshold=0.9)
    superuser_client.post(
        reverse("admin:llm_cachepolicy_changelist"),
        {"action": "purge_caches", "_selected_action": [policy.pk]},
    )
    assert exact_get(request.namespace, request.key) is None


# --- commands ------------------------------------------------------------------------------

FAQ_YAML = """
- question: How do I reset my password?
  answer: Open Settings, then Security, then Reset password.
  paraphrases: ["I need to reset my password"]
- q: What are your opening hours?
  a: We are open 9:00-17:00 CET on weekdays.
"""


@pytest.fixture
def faq_file(tmp_path):
    path = tmp_path / "faq.yaml"
    path.write_text(FAQ_YAML)
    return path


@pytest.mark.django_db(transaction=True)
async def test_warmed_faq_answers_are_served_even_to_sampling_models(
    owner, faq_file, settings, monkeypatch
):
    settings.LLM_TEMPERATURE = 0.7  # model replies are not cached; an operator's FAQ is
    settings.CACHE_REPLAY_CHARS_PER_SECOND = 0
    monkeypatch.setattr("chat.replies.dispatch.dispatch_generation", lambda mid, provider: None)
    indexes_forget()
    organisation = await sync_to_async(lambda: owner.personal_organisation)()
    await sync_to_async(call_command)(
        "cache_warm", "--org", organisation.slug, "--file", str(faq_file)
    )
    assert await CacheEntry.objects.filter(kind="faq").acount() == 3

    verbatim = await ask(owner, "how do I reset my password")
    assert verbatim.cache == "exact"
    assert verbatim.text == "Open Settings, then Security, then Reset password."
    reworded = await ask(owner, "How can I reset my password?")
    assert reworded.cache == "semantic" and reworded.text == verbatim.text
    assert (await ask(owner, "How do I reset my username?")).cache is None
    assert await CacheEntry.objects.filter(kind="reply").acount() == 0


@pytest.mark.django_db
def test_cache_warm_takes_json_and_refuses_bad_input(tmp_path, organisation):
    good = tmp_path / "faq.json"
    good.write_text('{"entries": [{"question": "Q?", "answer": "A."}]}')
    call_command("cache_warm", "--org", str(organisation.pk), "--file", str(good))
    assert CacheEntry.objects.get().answer == "A."
    call_command("cache_warm", "--org", organisation.slug, "--file", str(good))
    assert CacheEntry.objects.count() == 1, "warming again replaces, it does not duplicate"

    bad = tmp_path / "bad.yaml"
    bad.write_text("- question: no answer here\n")
    with pytest.raises(CommandError, match="item 1 has no answer"):
        call_command("cache_warm", "--org", organisation.slug, "--file", str(bad))
    with pytest.raises(CommandError, match="No organisation"):
        call_command("cache_warm", "--org", "nobody", "--file", str(good))


@pytest.mark.django_db
def test_cache_purge_by_entry_organisation_and_all(organisation, other_organisation):
    a, b = stored("a", organisation), stored("b", organisation)
    c = stored("c", other_organisation)
    entry = CacheEntry.objects.get(key=a.key)
    call_command("cache_purge", "--entry", str(entry.pk))
    assert exact_get(a.namespace, a.key) is None and exact_get(b.namespace, b.key) is not None
    call_command("cache_purge", "--org", organisation.slug)
    assert exact_get(b.namespace, b.key) is None and exact_get(c.namespace, c.key) is not None
    call_command("cache_purge", "--all")
    assert not CacheEntry.objects.exists() and exact_get(c.namespace, c.key) is None


# --- per-organisation semantic matching ------------------------------------------------------

POLICIES = "admin:llm_cachepolicy_changelist"


def policy_row(page: str, organisation) -> str:
    """The list row of `organisation`'s policy."""
    rows = [row for row in page.split("<tr") if f">{organisation.name}<" in row]
    assert len(rows) == 1, rows
    return rows[0]


@pytest.mark.django_db
def test_the_policy_list_shows_exact_and_semantic_hits_per_organisation(
    superuser_client, organisation, other_organisation
):
    today = date.today()
    for org, exact, semantic in ((organisation, 5, 3), (other_organisation, 1, 7)):
        CachePolicy.objects.create(organisation=org)
        CacheStat.objects.create(
            namespace=f"org:{org.pk}",
            organisation=org,
            day=today,
            lookups=20,
            exact_hits=exact,
            semantic_hits=semantic,
        )
    CacheStat.objects.create(  # older than the list's window: not counted
        namespace=f"org:{organisation.pk}",
        organisation=organisation,
        day=today - timedelta(days=30),
        lookups=100,
        exact_hits=100,
        semantic_hits=100,
    )
    page = superuser_client.get(reverse(POLICIES)).content.decode()
    ours, theirs = policy_row(page, organisation), policy_row(page, other_organisation)
    assert '<td class="field-exact_hits_recent">5</td>' in ours
    assert '<td class="field-semantic_hits_recent">3</td>' in ours
    assert '<td class="field-lookups_recent">20</td>' in ours
    assert '<td class="field-exact_hits_recent">1</td>' in theirs
    assert '<td class="field-semantic_hits_recent">7</td>' in theirs


def policy_form(**changes) -> dict[str, str]:
    """The change form as the browser posts it (a checkbox left unticked is not sent)."""
    form = {"enabled": "on", "semantic_threshold": "", "ttl_seconds": "", "max_entries": ""}
    form.update(changes)
    return {name: value for name, value in form.items() if value is not None}


@pytest.fixture
def admin_client(client, owner, organisation):
    """The owner: staff, and admin of the team organisation."""
    owner.is_staff = True
    owner.save(update_fields=["is_staff"])
    client.force_login(owner)
    return client


@pytest.mark.django_db
def test_an_organisation_admin_switches_semantic_matching_off_and_sets_the_threshold(
    admin_client, organisation
):
    add = admin_client.post(
        reverse("admin:llm_cachepolicy_add"),
        policy_form(organisation=str(organisation.pk), semantic_enabled="on"),
    )
    assert add.status_code == 302, add.content.decode()[:2000]
    policy = CachePolicy.objects.get(organisation=organisation)
    assert policy_for(organisation.pk).semantic_enabled
    assert policy_for(organisation.pk).threshold == pytest.approx(settings.CACHE_SEMANTIC_THRESHOLD)

    change = reverse("admin:llm_cachepolicy_change", args=[policy.pk])
    response = admin_client.post(
        change, policy_form(organisation=str(organisation.pk), semantic_threshold="0.9")
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert policy_for(organisation.pk).semantic_enabled is False  # the box was left unticked
    assert policy_for(organisation.pk).threshold == pytest.approx(0.9)

    refused = admin_client.post(
        change,
        policy_form(
            organisation=str(organisation.pk), semantic_enabled="on", semantic_threshold="1.5"
        ),
    )
    assert refused.status_code == 200 and "less than or equal to 1.0" in refused.content.decode()
    assert policy_for(organisation.pk).threshold == pytest.approx(0.9)


@pytest.mark.django_db
def test_an_operator_sees_the_counts_but_cannot_change_the_policy(
    operator_client, organisation, other_organisation
):
    policy = CachePolicy.objects.create(organisation=organisation, semantic_threshold=0.7)
    CachePolicy.objects.create(organisation=other_organisation)
    page = operator_client.get(reverse(POLICIES)).content.decode()
    assert "Exact hits (7 days)" in page and "Semantic hits (7 days)" in page
    assert f">{organisation.name}<" in page and "oscar" not in page
    change = reverse("admin:llm_cachepolicy_change", args=[policy.pk])
    response = operator_client.post(change, policy_form(organisation=str(organisation.pk)))
    assert response.status_code == 403
    policy.refresh_from_db()
    assert policy.semantic_enabled and policy.semantic_threshold == pytest.approx(0.7)


@pytest.mark.django_db(transaction=True)
async def test_what_an_organisation_admin_sets_in_the_admin_decides_its_next_lookups(
    admin_client, owner, organisation, settings, monkeypatch
):
    """Semantic matching switched off in the admin: a rewording is a miss (an exact repeat
    still hits); switched on again with a threshold above the rewording's similarity: a miss;
    at a threshold below it: a semantic hit. Another organisation is not affected."""
    settings.LLM_TEMPERATURE = 0.0
    settings.CACHE_REPLAY_CHARS_PER_SECOND = 0
    monkeypatch.setattr("chat.replies.dispatch.dispatch_generation", lambda mid, provider: None)
    indexes_forget()
    post = sync_to_async(admin_client.post)
    added = await post(
        reverse("admin:llm_cachepolicy_add"), policy_form(organisation=str(organisation.pk))
    )
    assert added.status_code == 302, added.content.decode()[:2000]
    policy = await CachePolicy.objects.aget(organisation=organisation)
    change = reverse("admin:llm_cachepolicy_change", args=[policy.pk])

    await ask(owner, "What are your opening hours?", organisation=organisation)
    off = await ask(owner, "When are you open?", organisation=organisation)
    assert off.cache is None
    assert (await ask(owner, "what are your opening hours", organisation=organisation)).cache == (
        "exact"
    )

    await ask(owner, "How do I delete a conversation?", organisation=organisation)
    strict = policy_form(
        organisation=str(organisation.pk), semantic_enabled="on", semantic_threshold="0.99"
    )
    assert (await post(change, strict)).status_code == 302
    assert (
        await ask(owner, "How can I remove a conversation?", organisation=organisation)
    ).cache is None

    loose = policy_form(
        organisation=str(organisation.pk), semantic_enabled="on", semantic_threshold="0.5"
    )
    assert (await post(change, loose)).status_code == 302
    # (The strict miss above was stored: another wording.)
    hit = await ask(owner, "How can I erase a conversation?", organisation=organisation)
    assert hit.cache == "semantic" and hit.message.routing["similarity"] < 0.99
    stat = await CacheStat.objects.aget(organisation=organisation)
    assert (stat.exact_hits, stat.semantic_hits) == (1, 1)
    page = (await sync_to_async(admin_client.get)(reverse(POLICIES))).content.decode()
    row = policy_row(page, organisation)
    assert '<td class="field-exact_hits_recent">1</td>' in row
    assert '<td class="field-semantic_hits_recent">1</td>' in row

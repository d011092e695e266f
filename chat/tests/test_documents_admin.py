"""Documents in the admin: upload through the same service, refusals as form errors, the
organisation switch, and the operator's purge."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from accounts.models import Membership
from accounts.services import membership_set
from chat.documents import services
from chat.documents.models import Document


@pytest.fixture
def collection(owner, organisation):
    return services.collection_create(organisation=organisation, name="Handbook", by=owner)


@pytest.fixture
def operator(client, owner, organisation, member):
    membership_set(organisation=organisation, user=member, role=Membership.Role.OPERATOR, by=owner)
    member.is_staff = True
    member.save(update_fields=["is_staff"])
    client.force_login(member)
    return member


def test_an_operator_uploads_in_the_admin_and_a_bad_file_is_a_form_error(
    client, operator, collection
):
    url = "/admin/chat/document/add/"
    bad = client.post(
        url, {"upload": SimpleUploadedFile("x.pdf", b"nope"), "collection": collection.pk}
    )
    assert bad.status_code == 200 and "not a PDF" in bad.content.decode()
    assert not Document.objects.exists()
    good = client.post(
        url,
        {"upload": SimpleUploadedFile("hr.md", b"# Leave\n25 days."), "collection": collection.pk},
    )
    assert good.status_code == 302
    document = Document.objects.get()
    assert (document.name, document.uploaded_by, document.collection) == (
        "hr.md",
        operator,
        collection,
    )
    listing = client.get("/admin/chat/document/").content.decode()
    assert "hr.md" in listing and document.status in listing


def test_an_operator_purges_their_organisations_documents(
    client, operator, owner, collection, organisation
):
    services.document_upload(by=owner, name="a.md", data=b"alpha", collection=collection)
    response = client.post(
        "/admin/chat/organisationdocuments/",
        {"action": "purge_documents", "_selected_action": [organisation.pk]},
    )
    assert response.status_code == 302
    assert not Document.objects.exists()


def test_an_organisation_admin_switches_documents_off_and_it_is_audited(
    client, owner, organisation
):
    from accounts.models import AuditLog, Organisation

    owner.is_staff = True
    owner.save(update_fields=["is_staff"])
    client.force_login(owner)
    response = client.post(
        f"/admin/chat/organisationdocuments/{organisation.pk}/change/",
        {"documents_enabled": ""},
    )
    assert response.status_code == 302
    assert Organisation.objects.get(pk=organisation.pk).documents_enabled is False
    entry = AuditLog.objects.get(action=AuditLog.Action.ADMIN_EDIT, organisation=organisation)
    assert (entry.actor, entry.details) == (owner, {"documents_enabled": False})
